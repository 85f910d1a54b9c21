package httpcarrier_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

// switchHandler switches Upgrade (to "echo") and CONNECT requests with
// Hijack, as net/http handlers do, and echoes the stream upper-cased
// after the client ends its direction; other requests get 200.
func switchHandler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var head string
		switch {
		case r.Method == http.MethodConnect && r.Host == "target.example:7":
			head = "HTTP/1.1 200 Connection established\r\n\r\n"
		case r.Header.Get("Upgrade") == "echo":
			head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
		case r.URL.Path == "/hijack":
			_, _, err := http.NewResponseController(w).Hijack()
			if !errors.Is(err, post.ErrNotSupported) {
				t.Errorf("Hijack of an ordinary request: %v", err)
			}
			io.WriteString(w, "not hijacked")
			return
		default:
			io.WriteString(w, "no switch")
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString(head)
		if err := brw.Flush(); err != nil {
			t.Errorf("writing head: %v", err)
			return
		}
		b, err := io.ReadAll(brw)
		if err != nil {
			t.Errorf("reading stream: %v", err)
			return
		}
		if _, err := conn.Write(bytes.ToUpper(b)); err != nil {
			t.Errorf("writing stream: %v", err)
		}
	})
}

// TestUpgradeAndConnect: a 101 to an Upgrade and a 200 to CONNECT turn
// the fork into a byte stream each way; resp.Body is its
// io.ReadWriteCloser, as with net/http's own Transport.
func TestUpgradeAndConnect(t *testing.T) { forStacks(t, testUpgradeAndConnect) }

func testUpgradeAndConnect(t *testing.T, stack string) {
	client, url, _, _ := setup(t, stack, switchHandler(t))
	data := make([]byte, 300_000)
	rand.Read(data)
	data = bytes.ToLower(data)
	for _, method := range []string{http.MethodGet, http.MethodConnect} {
		req, _ := http.NewRequest(method, url+"/ws", nil)
		if method == http.MethodConnect {
			req.Host = "target.example:7"
		} else {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "echo")
		}
		resp, err := client.Transport.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok || resp.StatusCode/100 == 4 {
			t.Fatalf("%s: status %d, body %T", method, resp.StatusCode, resp.Body)
		}
		go func() {
			rwc.Write(data)
			rwc.(interface{ CloseWrite() error }).CloseWrite()
		}()
		got, err := io.ReadAll(rwc)
		if err != nil {
			t.Fatalf("%s: reading the stream: %v", method, err)
		}
		if !bytes.Equal(got, bytes.ToUpper(data)) {
			t.Fatalf("%s: got %d bytes, want %d upper-cased", method, len(got), len(data))
		}
		if err := rwc.Close(); err != nil {
			t.Logf("%s: close: %v", method, err)
		}
	}
	// A server that does not switch answers as usual; the client's
	// message ends after the head.
	for _, path := range []string{"/plain"} {
		req, _ := http.NewRequest(http.MethodGet, url+path, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "other")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(b), "no") {
			t.Fatalf("%s: %d %q %v", path, resp.StatusCode, b, err)
		}
	}
	// Hijack of an ordinary request is refused.
	resp, err := client.Get(url + "/hijack")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "not hijacked" {
		t.Fatalf("/hijack: %q", b)
	}
}

// TestTunnelEnds: a hijacked stream ends with Server.Close, and a
// switched response's stream with the request's context; blocked reads
// return at once, on both sides.
func TestTunnelEnds(t *testing.T) {
	blocked := make(chan error, 1)
	client, url, srv, _ := setup(t, "fsp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		_, err = brw.ReadByte() // the client sends nothing
		blocked <- err
	}))
	open := func(ctx context.Context) io.ReadWriteCloser {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "echo")
		resp, err := client.Transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Body.(io.ReadWriteCloser)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rwc := open(ctx)
	readErr := make(chan error, 1)
	go func() {
		_, err := rwc.Read(make([]byte, 1))
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("read after cancel: no error")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a cancelled tunnel's Read did not return")
	}
	select {
	case <-blocked: // the client's abort reached the handler
	case <-time.After(2 * time.Second):
		t.Fatal("the handler's Read did not return after the client aborted")
	}
	rwc.Close()

	rwc = open(context.Background())
	defer rwc.Close()
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Server.Close waits for a hijacked stream")
	}
	if err := <-blocked; err == nil {
		t.Fatal("hijacked Read: no error after Close")
	}
}
