package httpcarrier

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/fronttest"
)

// bodyServer serves h behind BodyTimeout{timeout, rate} on loopback,
// HTTP/1.1 and h2c, and returns its address.
func bodyServer(t testing.TB, h http.Handler, timeout time.Duration, rate int) string {
	return h1h2Server(t, &BodyTimeout{Handler: h, Timeout: timeout, MinRate: rate})
}

// h1h2Server serves h on loopback, HTTP/1.1 and h2c, and returns its
// address.
func h1h2Server(t testing.TB, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// h2cTransport is a client Transport speaking h2c with prior knowledge.
func h2cTransport() *http.Transport {
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	return h2
}

// TestBodyTimeoutTrickle: a body trickled at 10 B/s is cut on HTTP/1.1
// and HTTP/2; an honest slow upload passes.
func TestBodyTimeoutTrickle(t *testing.T) {
	addr := bodyServer(t, fronttest.EchoHandler(), 2*time.Second, 1000)
	t.Run("http1", func(t *testing.T) { t.Parallel(); fronttest.TrickledBody(t, addr) })
	t.Run("h2c", func(t *testing.T) { t.Parallel(); fronttest.TrickledBodyH2(t, addr) })
	t.Run("slow upload", func(t *testing.T) { t.Parallel(); fronttest.SlowUpload(t, addr) })
}

// TestBodyTimeoutHandlerPause: time in which the handler does not read
// the body (a slow origin) does not count against the client, on
// HTTP/1.1 and HTTP/2, whose deadline fires whether or not a Read
// waits.
func TestBodyTimeoutHandlerPause(t *testing.T) {
	// A wait for the client is bounded by timeout, so it must be well
	// above what a loaded host under the race detector takes to move
	// the body (a wait of 500 ms failed once in 15 runs); the pause is
	// over it.
	const timeout = time.Second
	body := bytes.Repeat([]byte("x"), 4<<20) // past net/http's buffers and h2's window
	addr := bodyServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		half := make([]byte, len(body)/2)
		if _, err := io.ReadFull(r.Body, half); err != nil {
			http.Error(w, "first half: "+err.Error(), http.StatusBadRequest)
			return
		}
		time.Sleep(5 * timeout / 2) // the origin is slow
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, "second half: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, int64(len(half))+n)
	}), timeout, 100<<10) // 4 MiB earn 40 s: only a wait can run out
	h2 := h2cTransport()
	defer h2.CloseIdleConnections()
	h1 := &http.Transport{}
	defer h1.CloseIdleConnections()
	for name, tr := range map[string]*http.Transport{"http1": h1, "h2c": h2} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			resp, err := (&http.Client{Transport: tr}).Post("http://"+addr+"/", "", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(got) != fmt.Sprint(len(body)) {
				t.Errorf("%s %q, want 200 %d", resp.Status, got, len(body))
			}
		})
	}
}

// TestBodyTimeoutKeepAlive: a body read whole leaves no deadline on the
// connection, nor does one the handler left unread: a response sent
// long after it, and the next request on the same connection, are
// served.
func TestBodyTimeoutKeepAlive(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr := bodyServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		if r.URL.Path != "/unread" {
			n, _ = io.Copy(io.Discard, r.Body)
		}
		time.Sleep(3 * timeout) // net/http's background read runs meanwhile
		if err := r.Context().Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError) // a proxy would have given up
			return
		}
		fmt.Fprint(w, n)
	}), timeout, -1)
	c := fronttest.DialFrom(t, "127.0.0.1", addr)
	br := bufio.NewReader(c)
	for i, path := range []string{"/", "/unread", "/", "/unread"} {
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", path)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		want := "5"
		if path == "/unread" {
			want = "0"
		}
		if err != nil || resp.StatusCode != http.StatusOK || string(got) != want {
			t.Fatalf("request %d: %q %v", i, got, err)
		}
	}
}

// BenchmarkBodyTimeout uploads 1 MiB bodies to a handler that reads
// them, over HTTP/1.1 and h2c, with BodyTimeout's defaults (on) and
// with it off, to show what the deadlines cost a Read (of up to 32
// KiB, as the Transport reads a body).
func BenchmarkBodyTimeout(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<20)
	for _, on := range []bool{false, true} {
		timeout := time.Duration(-1)
		if on {
			timeout = 0
		}
		for _, proto := range []string{"http1", "h2c"} {
			b.Run(fmt.Sprintf("%s/on=%v", proto, on), func(b *testing.B) {
				addr := bodyServer(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					buf := make([]byte, partSize)
					for {
						if _, err := r.Body.Read(buf); err != nil {
							return
						}
					}
				}), timeout, 0)
				tr := &http.Transport{Protocols: new(http.Protocols)}
				if proto == "h2c" {
					tr.Protocols.SetUnencryptedHTTP2(true)
				} else {
					tr.Protocols.SetHTTP1(true)
				}
				defer tr.CloseIdleConnections()
				c := &http.Client{Transport: tr}
				b.SetBytes(int64(len(body)))
				cpu0 := attack.CPU()
				for b.Loop() {
					resp, err := c.Post("http://"+addr+"/", "", bytes.NewReader(body))
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				b.ReportMetric(float64(attack.CPU()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
