package fronttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// trickleFor is how long a trickling client keeps sending: a front whose
// body timeout works ends it long before.
const trickleFor = 30 * time.Second

// EchoHandler reads the whole request body and answers with its length
// and SHA-256 in hex, "n sha".
func EchoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
}

// TrickledBody checks a front at addr whose request bodies must arrive
// faster than 10 bytes a second after a first allowance of a few
// seconds: a client at 127.0.0.8 sending a body one byte every 100 ms
// over HTTP/1.1 has its connection closed (after an error response, or
// none) while it still sends. Without a body timeout it stays open as
// long as the client trickles.
func TrickledBody(t *testing.T, addr string) {
	t.Helper()
	c := DialFrom(t, "127.0.0.8", addr)
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	var gaveUp atomic.Bool
	go func() {
		defer close(stopped)
		end := time.Now().Add(trickleFor)
		for time.Now().Before(end) {
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		gaveUp.Store(true)
	}()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(trickleFor + 5*time.Second))
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("a trickled body of a million bytes got %s", resp.Status)
	}
	io.Copy(io.Discard, br) // until the front closes it
	if gaveUp.Load() {
		t.Fatalf("a body trickling at 10 B/s kept its connection for %v", time.Since(start).Round(time.Second))
	}
	c.Close()
	<-stopped
	t.Logf("trickling connection closed after %v", time.Since(start).Round(time.Millisecond))
}

// TrickledBodyH2 is TrickledBody over HTTP/2 without TLS (h2c with prior
// knowledge): the request, not the connection, must end while the
// client still sends.
func TrickledBodyH2(t *testing.T, addr string) {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gaveUp atomic.Bool
	go func() {
		end := time.Now().Add(trickleFor)
		for time.Now().Before(end) {
			if _, err := pw.Write([]byte{'x'}); err != nil {
				return
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
		gaveUp.Store(true)
		pw.CloseWithError(errors.New("trickled too long"))
	}()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/", pr)
	req.ContentLength = 1000000
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("a trickled body of a million bytes got %s", resp.Status)
		}
	}
	if gaveUp.Load() {
		t.Fatalf("a body trickling at 10 B/s over HTTP/2 kept its request for %v (%v)", time.Since(start).Round(time.Second), err)
	}
	t.Logf("trickling HTTP/2 request ended after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// SlowUpload checks that an honest slow upload within a front's bounds
// passes: 12 parts of 1 KiB, 300 ms apart (about 3.4 KB/s, no wait over
// 300 ms), over HTTP/1.1 from 127.0.0.9, to an origin serving
// EchoHandler; the body must arrive whole.
func SlowUpload(t *testing.T, addr string) {
	t.Helper()
	c := DialFrom(t, "127.0.0.9", addr)
	part := bytes.Repeat([]byte("0123456789abcdef"), 64)
	const parts = 12
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", parts*len(part))
	h := sha256.New()
	for i := range parts {
		if i > 0 {
			time.Sleep(300 * time.Millisecond)
		}
		if _, err := c.Write(part); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		h.Write(part)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	want := strconv.Itoa(parts*len(part)) + " " + hex.EncodeToString(h.Sum(nil))
	if err != nil || resp.StatusCode != http.StatusOK || string(got) != want {
		t.Fatalf("slow upload: %s %q (%v), want 200 %q", resp.Status, got, err, want)
	}
}
