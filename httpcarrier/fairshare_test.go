package httpcarrier_test

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/httpcarrier"
)

// h2cFrom is an HTTP/2 (h2c) client whose connections come from ip.
func h2cFrom(ip string) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols),
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// TestSlotsSharedByPrefix: a front (RequestLimit, ReverseProxy, Transport)
// whose clients of three /24s hold 384 requests open at the origin, 128
// each (RequestLimit's defaults), still answers a GET from a fourth /24:
// the Transport shares the origin's 256 slots a root between prefixes
// and keeps free ones for a newcomer. Before, the three took all 256 and
// the GET waited for one of them to end.
func TestSlotsSharedByPrefix(t *testing.T) {
	forStacks(t, slotsSharedByPrefix)
}

func slotsSharedByPrefix(t *testing.T, stack string) {
	const prefixes, addrs, perAddr = 3, 2, httpcarrier.DefaultMaxRequestsPerAddr
	const total, slots = prefixes * addrs * perAddr, httpcarrier.DefaultMaxConcurrentRequests
	release := make(chan struct{})
	var mu sync.Mutex
	entered := 0
	client, origin, _, _ := setup(t, stack, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			mu.Lock()
			entered++
			mu.Unlock()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	tr := client.Transport.(*httpcarrier.Transport)
	target, _ := url.Parse(origin)
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	front := &http.Server{Handler: &httpcarrier.RequestLimit{Handler: proxy}, Protocols: new(http.Protocols)}
	front.Protocols.SetHTTP1(true)
	front.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go front.Serve(ln)
	t.Cleanup(func() { front.Close() })
	get := func(ctx context.Context, c *http.Client, path string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var held sync.WaitGroup
	var clients []*http.Client
	defer func() {
		close(release)
		held.Wait()
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	for p := range prefixes {
		for a := range addrs {
			c := h2cFrom(net.IPv4(127, 0, byte(1+p), byte(1+a)).String())
			clients = append(clients, c)
			for range perAddr {
				held.Go(func() {
					if code, err := get(context.Background(), c, "/slow"); err != nil || code != http.StatusOK {
						t.Errorf("a held request: %d, %v", code, err)
					}
				})
			}
		}
	}
	// Wait until every held request is at the origin or waits for a
	// slot at the front, or the origin's slots are full (the state
	// without the share). The limit only bounds a hang.
	stop := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := entered
		mu.Unlock()
		if n >= slots || n+httpcarrier.SlotWaiters(tr) == total {
			t.Logf("%s: %d requests at the origin, %d waiting at the front", stack, n, total-n)
			// However they came, three prefixes leave 55 slots free.
			if n > slots-55 {
				t.Errorf("three prefixes hold %d slots", n)
			}
			break
		}
		if time.Now().After(stop) {
			t.Fatalf("%d requests at the origin and %d waiting after 60 s, of %d", n, httpcarrier.SlotWaiters(tr), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	honest := h2cFrom("127.0.4.1")
	defer honest.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	code, err := get(ctx, honest, "/")
	t.Logf("%s: the fourth /24's GET: %v", stack, time.Since(start))
	if err != nil || code != http.StatusOK {
		t.Errorf("a client of a fourth /24 while three held their requests: %d, %v", code, err)
	}
}

// TestIdleForksMakeRoom: the Transport learns the slots the server
// announces on the root, and the forks it keeps idle hold slots at the
// server, which waits on them for a next request: a request that needs
// a new fork while they fill the server's slots closes one. Before, a
// POST after four concurrent GETs to a server serving four at once
// waited for the server's 5-minute idle timeout.
func TestIdleForksMakeRoom(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		const n = 4
		var arrived sync.WaitGroup
		arrived.Add(n)
		client, u, _, _ := setup(t, stack, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				arrived.Done()
				arrived.Wait() // all n at once: n forks
			}
			io.WriteString(w, "ok")
		}), func(s *httpcarrier.Server) { s.MaxConcurrentRequests = n })
		tr := client.Transport.(*httpcarrier.Transport)
		var gets sync.WaitGroup
		for range n {
			gets.Go(func() {
				resp, err := client.Get(u + "/")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		gets.Wait()
		if k := len(httpcarrier.IdleForks(tr)); k != n {
			t.Fatalf("%d idle forks after %d concurrent GETs, want %d", k, n, n)
		}
		// The root's reader may not have read the announcement yet (the
		// limit only bounds a hang).
		origin := strings.TrimPrefix(u, "http://")
		for stop := time.Now().Add(20 * time.Second); httpcarrier.Slots(tr, origin) != n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(stop) {
				t.Fatalf("the Transport assumes %d slots, the server announced %d", httpcarrier.Slots(tr, origin), n)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", u+"/", strings.NewReader("body"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("a POST while idle forks held every slot: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
}
