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

// slotFront is a front (RequestLimit, ReverseProxy, Transport) to an
// origin on stack that holds every request for /slow until the test
// ends; its clients are h2c clients from addresses of their own.
type slotFront struct {
	t        *testing.T
	tr       *httpcarrier.Transport
	addr     string
	mu       sync.Mutex
	entered  int // requests for /slow at the origin
	held     sync.WaitGroup
	clients  map[string]*http.Client
	released chan struct{}
}

func newSlotFront(t *testing.T, stack string) *slotFront {
	f := &slotFront{t: t, clients: map[string]*http.Client{}, released: make(chan struct{})}
	client, origin, _, _ := setup(t, stack, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			f.mu.Lock()
			f.entered++
			f.mu.Unlock()
			select {
			case <-f.released:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	f.tr = client.Transport.(*httpcarrier.Transport)
	target, _ := url.Parse(origin)
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: f.tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	front := &http.Server{Handler: &httpcarrier.RequestLimit{Handler: proxy}, Protocols: new(http.Protocols)}
	front.Protocols.SetHTTP1(true)
	front.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	go front.Serve(ln)
	t.Cleanup(func() { front.Close() })
	// Registered after setup's: runs before the origin closes.
	t.Cleanup(func() {
		close(f.released)
		f.held.Wait()
		for _, c := range f.clients {
			c.CloseIdleConnections()
		}
	})
	return f
}

// client returns the client whose connections come from ip. Not for
// concurrent calls.
func (f *slotFront) client(ip string) *http.Client {
	c := f.clients[ip]
	if c == nil {
		c = h2cFrom(ip)
		f.clients[ip] = c
	}
	return c
}

// get sends a GET for path with c through the front.
func (f *slotFront) get(ctx context.Context, c *http.Client, path string) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+f.addr+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// hold sends a request for /slow from ip, which the origin holds until
// the test ends.
func (f *slotFront) hold(ip string) {
	c := f.client(ip)
	f.held.Go(func() {
		if code, err := f.get(context.Background(), c, "/slow"); err != nil || code != http.StatusOK {
			f.t.Errorf("a held request: %d, %v", code, err)
		}
	})
}

// counts returns the requests for /slow at the origin and those waiting
// for a slot at the front.
func (f *slotFront) counts() (entered, waiting int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.entered, httpcarrier.SlotWaiters(f.tr)
}

// settle waits until the held requests add up to n, at the origin or
// waiting at the front, or until the origin's slots are full (the state
// without the share). The limit only bounds a hang.
func (f *slotFront) settle(n int) (entered, waiting int) {
	for stop := time.Now().Add(60 * time.Second); ; time.Sleep(time.Millisecond) {
		entered, waiting = f.counts()
		if entered >= httpcarrier.DefaultMaxConcurrentRequests || entered+waiting == n {
			return entered, waiting
		}
		if time.Now().After(stop) {
			f.t.Fatalf("%d requests at the origin and %d waiting after 60 s, of %d", entered, waiting, n)
		}
	}
}

// newcomer sends a GET from ip, of a prefix holding nothing, and fails
// the test unless it is answered within 20 s.
func (f *slotFront) newcomer(stack, ip string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	code, err := f.get(ctx, f.client(ip), "/")
	f.t.Logf("%s: the GET from a new prefix: %v", stack, time.Since(start))
	if err != nil || code != http.StatusOK {
		f.t.Errorf("a client of a new prefix: %d, %v", code, err)
	}
}

// TestSlotsSharedByPrefix: a front whose clients of three /24s hold 384
// requests open at the origin, 128 each (RequestLimit's defaults),
// still answers a GET from a fourth /24: the Transport shares the
// origin's 256 slots a root between prefixes and keeps free ones for a
// newcomer. Before, the three took all 256 and the GET waited for one
// of them to end.
func TestSlotsSharedByPrefix(t *testing.T) {
	forStacks(t, slotsSharedByPrefix)
}

func slotsSharedByPrefix(t *testing.T, stack string) {
	const prefixes, addrs, perAddr = 3, 2, httpcarrier.DefaultMaxRequestsPerAddr
	const total = prefixes * addrs * perAddr
	f := newSlotFront(t, stack)
	for p := range prefixes {
		for a := range addrs {
			for range perAddr {
				f.hold(net.IPv4(127, 0, byte(1+p), byte(1+a)).String())
			}
		}
	}
	n, _ := f.settle(total)
	t.Logf("%s: %d requests at the origin, %d waiting at the front", stack, n, total-n)
	// However they came, three prefixes leave 64 slots free.
	if free := httpcarrier.DefaultMaxConcurrentRequests - n; free < 64 {
		t.Errorf("three prefixes left %d slots free", free)
	}
	f.newcomer(stack, "127.0.4.1")
}

// TestSlotsWorstOrder: clients of 40 /24s each hold requests open at the
// origin one after the other, each prefix taking all the Transport lets
// it (until one of its requests waits at the front, or RequestLimit's
// 128), the order that fills the origin with the fewest prefixes; a GET
// from a 41st /24 is still answered. Before the reserve, 23 prefixes
// took all 256 slots (128, 49, 24, 14, ...) and the GET waited for one
// of them to end: no answer in 20 s.
func TestSlotsWorstOrder(t *testing.T) {
	forStacks(t, slotsWorstOrder)
}

func slotsWorstOrder(t *testing.T, stack string) {
	const prefixes = 40
	perPrefix := httpcarrier.DefaultMaxRequestsPerAddr * 2 // RequestLimit's 128
	f := newSlotFront(t, stack)
	sent := 0
	var took []int
	for p := range prefixes {
		before, waitedBefore := f.counts()
		for i := range perPrefix {
			f.hold(net.IPv4(127, 1, byte(p), byte(1+i/httpcarrier.DefaultMaxRequestsPerAddr)).String())
			sent++
			if _, waiting := f.settle(sent); waiting > waitedBefore {
				break
			}
		}
		n, _ := f.counts()
		took = append(took, n-before)
	}
	n, waiting := f.counts()
	t.Logf("%s: %d prefixes took %v: %d requests at the origin, %d waiting at the front", stack, prefixes, took, n, waiting)
	f.newcomer(stack, "127.2.0.1")
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
