package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/httpcarrier"
)

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, ln, rendezvous.NewServer(rendezvous.Config{}), nil, slog.New(slog.DiscardHandler))
	}()

	resp, err := http.Post("http://"+ln.Addr().String()+"/exchange", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(rendezvous.HeaderNonce) == "" {
		t.Errorf("unsigned request: status %d, nonce %q", resp.StatusCode, resp.Header.Get(rendezvous.HeaderNonce))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestSlowClients: clients that dribble their headers or body, or open
// too many connections, are cut off.
func TestSlowClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rendezvous.NewServer(rendezvous.Config{MaxWait: time.Second})
	defer srv.Close()
	hs := srv.HTTPServer()
	hs.ReadHeaderTimeout, hs.ReadTimeout = 200*time.Millisecond, 300*time.Millisecond
	go hs.Serve(httpcarrier.LimitListener(ln, 3, 0))
	defer hs.Close()

	for name, send := range map[string]string{
		"headers": "POST /exchange HTTP/1.1\r\nHost: x\r\n",
		"body":    "POST /exchange HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(send))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("slow %s: the server kept the connection: %v", name, err)
		}
	}

	// Three idle connections take this address's slots; a fourth is
	// closed at once.
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(50 * time.Millisecond) // let the server accept them
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("fourth connection: %v, want EOF", err)
	}
}
