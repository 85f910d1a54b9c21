package httpcarrier

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/fronttest"
)

// writeServer serves h behind WriteTimeout{timeout} on loopback, HTTP/1.1
// and h2c, and returns its address.
func writeServer(t testing.TB, h http.Handler, timeout time.Duration) string {
	return h1h2Server(t, &WriteTimeout{Handler: h, Timeout: timeout})
}

// endless writes to w until a write fails, then closes ended.
func endless(ended chan<- error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				ended <- err
				return
			}
		}
	})
}

// TestWriteTimeoutSlowReader: a response its client never reads fails
// the handler's writes once one has waited for the timeout, over
// HTTP/1.1 and HTTP/2; without WriteTimeout they block for as long as
// the client keeps the connection.
func TestWriteTimeoutSlowReader(t *testing.T) {
	ended := make(chan error, 2)
	addr := writeServer(t, endless(ended), 500*time.Millisecond)
	// HTTP/1.1: a request, and nothing read.
	c := fronttest.DialFrom(t, "127.0.0.1", addr)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// HTTP/2: the preface, a SETTINGS frame and a request, nothing read
	// (a connection whose windows the client never opens).
	h2 := h2cTransport()
	defer h2.CloseIdleConnections()
	resp, err := (&http.Client{Transport: h2}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for range 2 {
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			t.Fatal("a handler writing to a client that never reads still blocked after 30 s")
		}
	}
}

// TestWriteTimeoutPause: time the handler spends before and between its
// writes (a slow origin) does not count, over HTTP/1.1 and HTTP/2 (whose
// deadline fires whether or not a write waits), and the next request on
// a keep-alive connection starts with no deadline left.
func TestWriteTimeoutPause(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr := writeServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * timeout)
		io.WriteString(w, "first ")
		http.NewResponseController(w).Flush()
		time.Sleep(3 * timeout)
		io.WriteString(w, "second")
	}), timeout)
	h2 := h2cTransport()
	defer h2.CloseIdleConnections()
	resp, err := (&http.Client{Transport: h2}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != "first second" {
		t.Fatalf("h2c: %q, %v", got, err)
	}
	c := fronttest.DialFrom(t, "127.0.0.1", addr)
	br := bufio.NewReader(c)
	for i := range 2 {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("http1 request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != "first second" {
			t.Fatalf("http1 request %d: %q, %v", i, got, err)
		}
		time.Sleep(3 * timeout) // idle past the deadline of the last write
	}
}
