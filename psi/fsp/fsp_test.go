package fsp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pair returns configurations that authenticate a test certificate.
func pair(t testing.TB) (server, client *Config) {
	p := testcert.Must()
	server = &Config{Security: psi.Security{Certificates: []tls.Certificate{p.Leaf}}}
	client = &Config{Security: psi.Security{RootCAs: p.Pool, ServerName: "localhost"}}
	return server, client
}

func listen(t testing.TB, cfg *Config) *Listener {
	t.Helper()
	l, err := Listen(loopback, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func addrOf(l *Listener) netip.AddrPort { return l.Addr().(*net.UDPAddr).AddrPort() }

// connect dials l and returns both ends.
func connect(t testing.TB, l *Listener, cfg *Config) (client, server *Conn) {
	t.Helper()
	ctx := testContext(t)
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept(ctx)
		ch <- res{c, err}
	}()
	client, err := Dial(ctx, addrOf(l), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The responder confirms on the client's first protected packet.
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRoundTrip(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	sizes := []int{0, 1, 64 << 10, 4 << 20}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			msg := randBytes(n)
			errc := make(chan error, 1)
			go func() { errc <- c.SendMessage(ctx, msg) }()
			got, err := s.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("got %d bytes, want %d", len(got), len(msg))
			}
			// And back.
			go func() { errc <- s.SendMessage(ctx, msg) }()
			got, err = c.ReceiveMessage(ctx)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo: %v, %d bytes", err, len(got))
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMessageBoundaries(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	// One message written in three parts, then two more messages.
	go func() {
		c.WriteMessage(ctx, []byte("hel"), false)
		c.WriteMessage(ctx, []byte("lo "), false)
		c.WriteMessage(ctx, []byte("world"), true)
		c.SendMessage(ctx, nil)
		c.SendMessage(ctx, []byte("x"))
	}()
	for _, want := range []string{"hello world", "", "x"} {
		got, err := s.ReceiveMessage(ctx)
		if err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
}

func TestCloseReleases(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	msg := randBytes(1 << 20)
	if err := c.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// Close returns nil once the peer's stack has everything, which
	// takes a reader: a closed receive window holds it back.
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := s.ReceiveMessage(ctx)
		ch <- res{b, err}
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil || !bytes.Equal(r.b, msg) {
		t.Fatalf("after close: %v, %d bytes", r.err, len(r.b))
	}
	if _, _, err := s.ReadMessage(ctx, make([]byte, 10)); err != io.EOF {
		t.Fatalf("want io.EOF after RELEASE, got %v", err)
	}
	if err := c.SendMessage(ctx, msg); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestManyConns: 20 connections dialled at once each echo 5 messages.
// The minute is a hang bound only: under -race at load 16-20 the test
// took 5-21 s, the loopback RTT itself being 0.1-1 s.
func TestManyConns(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 20
	go func() {
		for {
			s, err := l.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				for {
					m, err := s.ReceiveMessage(ctx)
					if err != nil {
						if err != io.EOF {
							t.Logf("server: %v %s", err, s.debugState())
						}
						return
					}
					if s.SendMessage(ctx, m) != nil {
						return
					}
				}
			}()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := Dial(ctx, addrOf(l), ccfg)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range 5 {
				msg := randBytes(1000 * (i + j + 1))
				if err := c.SendMessage(ctx, msg); err != nil {
					errs <- err
					return
				}
				got, err := c.ReceiveMessage(ctx)
				if err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("conn %d: %v %s", i, err, c.debugState())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if len(errs) > 0 {
		l.t.mu.Lock()
		for id, c := range l.t.conns {
			t.Logf("server conn %x peer %x: %s", id, c.peer, c.debugState())
		}
		l.t.mu.Unlock()
	}
	for err := range errs {
		t.Error(err)
	}
}

func TestFlowControl(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.ReceiveWindow = 32 << 10 // 23 packets
	ccfg.SendBuffer = 64 << 10
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	msg := randBytes(3 << 20)
	errc := make(chan error, 1)
	go func() { errc <- c.SendMessage(ctx, msg) }()
	// Read in small pieces so the window opens a little at a time.
	var got []byte
	buf := make([]byte, 700)
	for {
		n, end, err := s.ReadMessage(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		if end {
			break
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("mismatch")
	}
	if st := c.Stats(); st.BytesInFlight > 32<<10+MaxDatagramSize {
		t.Fatalf("sender exceeded the window: %+v", st)
	}
}

// dialAccept dials l over tr and returns both ends.
func dialAccept(t testing.TB, ctx context.Context, tr *Transport, l *Listener, ccfg *Config) (c, s *Conn) {
	t.Helper()
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if s = <-acc; s == nil {
		t.Fatal("accept failed")
	}
	return c, s
}
