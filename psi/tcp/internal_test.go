package tcp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// rawClient completes the TLS handshake and, if hello is set, the hello
// exchange, and returns the TLS connection for writing arbitrary bytes.
func rawClient(t *testing.T, addr netip.AddrPort, hello []byte) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr.String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if hello != nil {
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		var buf [serverHelloLen]byte
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			t.Fatal(err)
		}
		sh, err := parseServerHello(buf[:])
		if err != nil || sh.status != statusOK {
			t.Fatalf("server hello %+v, %v", sh, err)
		}
	}
	return c
}

func testListener(t *testing.T, s Stack) *listener {
	t.Helper()
	cfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	ln, err := s.Listen(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*listener)
}

// Garbage after the hello closes that transient with ErrMalformed; the
// listener serves the next client.
func TestGarbageClosesTransient(t *testing.T) {
	root := (&clientHello{kind: kindRoot}).marshal()
	tests := []struct {
		name    string
		stack   Stack
		garbage []byte
		eof     bool // close the stream after the garbage
		raw     bool // write the garbage under TLS
	}{
		{name: "bad TLS record", garbage: append([]byte{23, 3, 3, 0, 32}, make([]byte, 32)...), raw: true},
		{name: "truncated frame", garbage: []byte{0x80, 0, 0, 100, 1, 2, 3}, eof: true},
		{name: "truncated header", garbage: []byte{0x80, 0}, eof: true},
		{name: "bare LF", stack: Stack{Framer: framer.Line{}}, garbage: []byte("abc\ndef\r\n")},
		{name: "CR without LF", stack: Stack{Framer: framer.Line{}}, garbage: []byte("abc\rdef\r\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := testListener(t, tt.stack)
			c := rawClient(t, ln.Addr(), root)
			ctx := context.Background()
			sv, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer sv.Close()
			w := io.Writer(c)
			if tt.raw {
				w = c.NetConn()
			}
			if _, err := w.Write(tt.garbage); err != nil {
				t.Fatal(err)
			}
			if tt.eof {
				c.CloseWrite()
			}
			var rerr error
			buf := make([]byte, 3)
			for rerr == nil {
				_, _, rerr = sv.ReadMessage(ctx, buf)
			}
			if !errors.Is(rerr, post.ErrMalformed) {
				t.Fatalf("read garbage: %v", rerr)
			}
			if _, _, err := sv.ReadMessage(ctx, buf); !errors.Is(err, post.ErrClosed) || !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("read after garbage: %v", err)
			}
			if err := sv.WriteMessage(ctx, []byte("x"), true, nil); !errors.Is(err, post.ErrClosed) {
				t.Fatalf("write after garbage: %v", err)
			}
			// The raw client sees its connection dropped.
			if _, err := c.Read(buf); err == nil {
				t.Fatal("connection still open")
			}
			// The listener still works.
			good := rawClient(t, ln.Addr(), root)
			sv2, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer sv2.Close()
			mw := tt.stack.framer().NewWriter(good)
			mw.WriteMessage([]byte("ok"), true)
			mw.Flush()
			if n, end, err := sv2.ReadMessage(ctx, buf); err != nil || !end || string(buf[:n]) != "ok" {
				t.Fatalf("next client: %q %v %v", buf[:n], end, err)
			}
		})
	}
}

// A bad hello, or none, is dropped by the listener without affecting it.
func TestBadHello(t *testing.T) {
	ln := testListener(t, Stack{})
	for _, hello := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: example.org:80\r\n\r\n"),
		append([]byte("PSTC\x02"), make([]byte, 33)...),     // unknown version
		append([]byte("PSTC\x01\x07"), make([]byte, 32)...), // unknown kind
	} {
		c := rawClient(t, ln.Addr(), nil)
		c.Write(hello)
		var buf [serverHelloLen]byte
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			t.Fatalf("no reply to %q: %v", hello, err)
		}
		sh, err := parseServerHello(buf[:])
		if err != nil || sh.status != statusBad {
			t.Fatalf("reply to %q: %+v %v", hello, sh, err)
		}
		if _, err := c.Read(buf[:]); err == nil {
			t.Fatalf("connection open after %q", hello)
		}
	}
	// A fork naming an unknown parent is refused.
	c := rawClient(t, ln.Addr(), nil)
	c.Write((&clientHello{kind: kindFork, parent: token{9}}).marshal())
	var buf [serverHelloLen]byte
	io.ReadFull(c, buf[:])
	if sh, _ := parseServerHello(buf[:]); sh.err() == nil || !errors.Is(sh.err(), post.ErrRefused) {
		t.Fatalf("unknown parent: %+v", sh)
	}
	select {
	case tr := <-ln.queue:
		t.Fatalf("bad hello produced a transient %v", tr)
	default:
	}
}

func TestHelloRoundTrip(t *testing.T) {
	ch := clientHello{kind: kindFork, assoc: [16]byte{1, 2}, parent: token{3, 4}}
	got, err := parseClientHello(ch.marshal())
	if err != nil || got != ch {
		t.Fatalf("client hello %+v, %v", got, err)
	}
	sh := serverHello{status: statusBusy, token: token{5}}
	gs, err := parseServerHello(sh.marshal())
	if err != nil || gs != sh {
		t.Fatalf("server hello %+v, %v", gs, err)
	}
	if !errors.Is(gs.err(), post.ErrBackpressure) {
		t.Fatalf("busy status: %v", gs.err())
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add((&clientHello{kind: kindRoot}).marshal())
	f.Add((&clientHello{kind: kindFork, assoc: [16]byte{1}, parent: token{2}}).marshal())
	f.Add([]byte("PSTC"))
	f.Add([]byte{})
	live := clientHello{kind: kindRoot}
	live.askLive(30 * time.Second)
	f.Add(live.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseClientHello(b)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(h.marshal(), b) {
			t.Fatalf("round trip: %x -> %x", b, h.marshal())
		}
		if d := h.liveIdle(); d < 0 || (d > 0 && h.kind != kindRoot) {
			t.Fatalf("liveness idle timeout %v in a hello of kind %d", d, h.kind)
		}
	})
}

func FuzzParseServerHello(f *testing.F) {
	f.Add((&serverHello{status: statusOK, token: token{1}}).marshal())
	f.Add((&serverHello{status: 200}).marshal())
	f.Add([]byte("PSTS\x01"))
	f.Add((&serverHello{status: statusOK, token: token{1}, idle: 30000}).marshal())
	f.Add([]byte("PSTS\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= serverHelloLen && len(b) != serverHelloLen+serverHelloRest(b) {
			if _, err := parseServerHello(b); err == nil {
				t.Fatalf("took %d bytes of a hello of version %d", len(b), b[4])
			}
		}
		h, err := parseServerHello(b)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(h.marshal(), b) {
			t.Fatalf("round trip: %x -> %x", b, h.marshal())
		}
		h.err() // any status maps to an error or nil without panicking
	})
}

// A fork must come from the same client identity as its parent: knowing
// the token is not enough.
func TestForkNeedsSameIdentity(t *testing.T) {
	a, b := testcert.Must(), testcert.Must()
	pinA, pinB := psi.PinCertificate(a.Leaf.Leaf), psi.PinCertificate(b.Leaf.Leaf)
	scfg := &psi.Config{Security: psi.Security{
		Certificates: []tls.Certificate{a.Leaf},
		ClientAuth:   true,
		PinnedKeys:   []psi.Pin{pinA, pinB},
	}}
	var s Stack
	ln, err := s.Listen(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ccfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{a.Leaf}, PinnedKeys: []psi.Pin{pinA}}}
	ctx := context.Background()
	c, err := s.Dial(ctx, ln.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sv, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	tok := sv.(*transient).token
	if tok != c.(*transient).token {
		t.Fatal("client did not learn the server's fork token")
	}
	for _, tc := range []struct {
		cert tls.Certificate
		want byte
	}{{b.Leaf, statusUnknown}, {a.Leaf, statusOK}} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
			InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{tc.cert}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write((&clientHello{kind: kindFork, parent: tok}).marshal())
		var buf [serverHelloLen]byte
		if _, err := io.ReadFull(conn, buf[:]); err != nil {
			t.Fatal(err)
		}
		if sh, _ := parseServerHello(buf[:]); sh.status != tc.want {
			t.Fatalf("fork with %v: status %d, want %d", tc.cert.Leaf.Subject, sh.status, tc.want)
		}
	}
	if _, err := sv.AcceptFork(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestKeepAlive(t *testing.T) {
	tests := []struct {
		stack, cfg, idle time.Duration
		want             time.Duration
		count            int
	}{
		{0, 0, 0, 10 * time.Second, 2}, // a third of the 30 s default idle
		{0, 0, 2 * time.Second, time.Second, 1},
		{0, 0, 9 * time.Second, 3 * time.Second, 2},
		{0, 5 * time.Second, 0, 5 * time.Second, 5},
		{-1, 0, 0, -1, 0},
		{-1, 2 * time.Second, 0, 2 * time.Second, 14},
		{0, time.Millisecond, time.Minute, time.Second, 59},
	}
	for _, tt := range tests {
		s := Stack{KeepAlive: tt.stack}
		kc, d := s.keepAlive(&psi.Config{KeepAlive: tt.cfg, IdleTimeout: tt.idle})
		if d != tt.want || kc.Count != tt.count || kc.Enable != (d > 0) {
			t.Errorf("%+v: got %v %+v", tt, d, kc)
		}
	}
}
