package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/postsockets/postsockets/internal/fronttest"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := demo(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GET /: hello from an unmodified web server: GET /, forwarded for 127.0.0.1", "GET /index.html: hello"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// gateways starts a web server serving h, a back and a front limited to
// perAddr and total connections, and returns the front's address.
func gateways(t *testing.T, h http.Handler, perAddr, total int) string {
	web := httptest.NewServer(h)
	t.Cleanup(web.Close)
	psk := make([]byte, 32)
	rand.Read(psk)
	addr, stop, err := back(context.Background(), "127.0.0.1:0", web.URL, psk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, lim := frontServer(front(addr, psk), ln, perAddr, total)
	go srv.Serve(lim)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestFrontConnsPerAddr: the example's front is bounded per client
// address like cmd/psgateway's (it had no limit before).
func TestFrontConnsPerAddr(t *testing.T) {
	fronttest.PerAddr(t, gateways(t, fronttest.SlowHandler(nil), 3, 0), 3)
}

// TestFrontConnsTotal: and in all, evicting only idle connections.
func TestFrontConnsTotal(t *testing.T) {
	release := make(chan struct{})
	fronttest.Total(t, gateways(t, fronttest.SlowHandler(release), 4, 6), release)
}

// TestFrontHeadMemory: a request head is bounded like cmd/psgateway's
// (64 KiB; before, net/http's 1 MiB, held until the head's 30 s).
func TestFrontHeadMemory(t *testing.T) {
	fronttest.LargeHeads(t, gateways(t, http.NotFoundHandler(), 64, 0))
}
