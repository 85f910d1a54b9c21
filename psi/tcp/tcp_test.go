package tcp_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
	"github.com/postsockets/postsockets/psi/tcp"
)

var (
	certs    = testcert.Must()
	loopback = netip.MustParseAddrPort("127.0.0.1:0")
)

func serverConfig() *psi.Config {
	return &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
}

func clientConfig() *psi.Config {
	return &psi.Config{Security: psi.Security{RootCAs: certs.Pool}}
}

func listen(t testing.TB, s tcp.Stack, cfg *psi.Config) psi.Listener {
	t.Helper()
	ln, err := s.Listen(context.Background(), loopback, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// connect dials ln and returns both ends.
func connect(t testing.TB, s tcp.Stack, ln psi.Listener, cfg *psi.Config) (client, server psi.Transient) {
	t.Helper()
	ctx := context.Background()
	c, err := s.Dial(ctx, ln.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sv, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.Close() })
	return c, sv
}

func pair(t testing.TB) (client, server psi.Transient) {
	t.Helper()
	var s tcp.Stack
	return connect(t, s, listen(t, s, serverConfig()), clientConfig())
}

// send writes m in parts of random sizes.
func send(tr psi.Transient, m []byte, rng *rand.Rand) error {
	ctx := context.Background()
	for {
		n := len(m)
		if n > 0 && rng.IntN(2) == 0 {
			n = rng.IntN(len(m) + 1)
		}
		if err := tr.WriteMessage(ctx, m[:n], n == len(m), nil); err != nil {
			return err
		}
		m = m[n:]
		if len(m) == 0 {
			return nil
		}
	}
}

// recv reads one whole message with a buffer of bufSize bytes.
func recv(tr psi.Transient, bufSize int) ([]byte, error) {
	var m []byte
	buf := make([]byte, bufSize)
	for {
		n, end, err := tr.ReadMessage(context.Background(), buf)
		m = append(m, buf[:n]...)
		if err != nil {
			return m, err
		}
		if end {
			return m, nil
		}
	}
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestStack(t *testing.T) {
	var s tcp.Stack
	if s.Name() != "tcp" {
		t.Errorf("Name = %q", s.Name())
	}
	want := psi.Reliable | psi.Ordered | psi.Fork | psi.Encrypted
	if s.Features() != want {
		t.Errorf("Features = %v, want %v", s.Features(), want)
	}
}

func TestRoundTrip(t *testing.T) {
	c, sv := pair(t)
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 64 << 10, 5 << 20, 3, 0}
	if testing.Short() {
		sizes[3] = 1 << 20
	}
	var msgs [][]byte
	for _, n := range sizes {
		msgs = append(msgs, randomBytes(rng, n))
	}
	// Client sends, server echoes, client checks.
	errc := make(chan error, 2)
	go func() {
		wrng := rand.New(rand.NewPCG(3, 4))
		for _, m := range msgs {
			if err := send(c, m, wrng); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	go func() {
		for range msgs {
			m, err := recv(sv, 32<<10)
			if err == nil {
				err = sv.WriteMessage(context.Background(), m, true, nil)
			}
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, want := range msgs {
		got, err := recv(c, 1+rng.IntN(100<<10))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(want))
		}
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if c.Association() != sv.Association() {
		t.Errorf("associations differ")
	}
}

func TestAssociation(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	cfg := clientConfig()
	cfg.Association = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	c, sv := connect(t, s, ln, cfg)
	if c.Association() != cfg.Association || sv.Association() != cfg.Association {
		t.Fatalf("association: client %x server %x, want %x", c.Association(), sv.Association(), cfg.Association)
	}
	if c.Stack() != "tcp" || sv.Features() != tcp.Features {
		t.Errorf("Stack %q Features %v", c.Stack(), sv.Features())
	}
}

// A small read buffer returns the message in parts, with end only on the
// last.
func TestPartialRead(t *testing.T) {
	c, sv := pair(t)
	msg := []byte("the quick brown fox jumps over the lazy dog")
	ctx := context.Background()
	if err := c.WriteMessage(ctx, msg[:10], false, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(ctx, msg[10:], true, nil); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 7)
	for {
		n, end, err := sv.ReadMessage(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n > len(buf) {
			t.Fatalf("n = %d", n)
		}
		got = append(got, buf[:n]...)
		if end {
			break
		}
		if len(got) >= len(msg) {
			t.Fatalf("no end after %d bytes", len(got))
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %q", got)
	}
}

// Parts flow to the reader before the message ends: a large message is
// never held whole.
func TestStreamingParts(t *testing.T) {
	c, sv := pair(t)
	ctx := context.Background()
	part := bytes.Repeat([]byte("x"), 100<<10)
	if err := c.WriteMessage(ctx, part, false, nil); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadFull(readerOf(ctx, sv), make([]byte, len(part)))
	if err != nil || got != len(part) {
		t.Fatalf("read %d of the first part before the message ended: %v", got, err)
	}
	if err := c.WriteMessage(ctx, []byte("end"), true, nil); err != nil {
		t.Fatal(err)
	}
	m, err := recv(sv, 10)
	if err != nil || string(m) != "end" {
		t.Fatalf("tail %q, %v", m, err)
	}
}

type trReader struct {
	ctx context.Context
	tr  psi.Transient
}

func (r trReader) Read(p []byte) (int, error) {
	n, _, err := r.tr.ReadMessage(r.ctx, p)
	return n, err
}

func readerOf(ctx context.Context, tr psi.Transient) io.Reader { return trReader{ctx, tr} }

func TestEOF(t *testing.T) {
	c, sv := pair(t)
	ctx := context.Background()
	if err := c.WriteMessage(ctx, []byte("bye"), true, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sv, 64); err != nil || string(m) != "bye" {
		t.Fatalf("last message %q, %v", m, err)
	}
	if _, _, err := sv.ReadMessage(ctx, make([]byte, 10)); err != io.EOF {
		t.Fatalf("after peer close: %v, want io.EOF", err)
	}
}

func TestUseAfterClose(t *testing.T) {
	c, _ := pair(t)
	ctx := context.Background()
	c.Close()
	if err := c.WriteMessage(ctx, []byte("x"), true, nil); !errors.Is(err, post.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
	if _, _, err := c.ReadMessage(ctx, make([]byte, 1)); !errors.Is(err, post.ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	if _, err := c.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrClosed) {
		t.Errorf("fork after close: %v", err)
	}
	if _, err := c.AcceptFork(ctx); !errors.Is(err, post.ErrClosed) {
		t.Errorf("accept fork after close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// Close unblocks a reader and a fork acceptor in other goroutines.
func TestCloseUnblocks(t *testing.T) {
	c, _ := pair(t)
	ctx := context.Background()
	errc := make(chan error, 2)
	go func() {
		_, _, err := c.ReadMessage(ctx, make([]byte, 10))
		errc <- err
	}()
	go func() {
		_, err := c.AcceptFork(ctx)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond) // let both block; the test passes either way
	c.Close()
	for range 2 {
		if err := <-errc; !errors.Is(err, post.ErrClosed) {
			t.Errorf("blocked call after close: %v", err)
		}
	}
}

func TestContextCancel(t *testing.T) {
	c, sv := pair(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := sv.ReadMessage(ctx, make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
	// The transient is still usable.
	bg := context.Background()
	if err := c.WriteMessage(bg, []byte("still here"), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sv, 3); err != nil || string(m) != "still here" {
		t.Fatalf("after cancel: %q, %v", m, err)
	}

	// A read deadline gives ErrTimeout, and again the transient survives.
	dctx, dcancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer dcancel()
	if _, _, err := sv.ReadMessage(dctx, make([]byte, 10)); !errors.Is(err, post.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	if err := c.WriteMessage(bg, []byte("again"), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sv, 64); err != nil || string(m) != "again" {
		t.Fatalf("after deadline: %q, %v", m, err)
	}
}

// TestWritePastDeadline: a write whose context's deadline has passed,
// though its timer has not marked it done, fails with the context's error
// and leaves the transient sending. It went to the socket, whose deadline
// failed it at once, and crypto/tls ended the sending side for good on
// that timeout: the next write failed, and a Carrier whose message
// lifetime ran out just before its write lost its transient.
func TestWritePastDeadline(t *testing.T) {
	c, sv := pair(t)
	late, cancel := ctxend.Late(time.Hour)
	defer cancel()
	if err := c.WriteMessage(late, []byte("late"), true, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write past its deadline: %v, want DeadlineExceeded", err)
	}
	if err := c.(psi.Flusher).Flush(late); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("flush past its deadline: %v, want DeadlineExceeded", err)
	}
	bg := context.Background()
	if err := c.WriteMessage(bg, []byte("on time"), true, nil); err != nil {
		t.Fatalf("write after a write past its deadline: %v", err)
	}
	if m, err := recv(sv, 64); err != nil || string(m) != "on time" {
		t.Fatalf("got %q, %v; want only %q", m, err, "on time")
	}
}

// A writer whose peer does not read times out with ErrTimeout, and the
// transient refuses further writes.
func TestWriteTimeout(t *testing.T) {
	c, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	big := make([]byte, 1<<20)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = c.WriteMessage(ctx, big, true, nil)
	}
	if !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("write to a stalled peer: %v", err)
	}
	if err := c.WriteMessage(context.Background(), []byte("x"), true, nil); err == nil {
		t.Fatal("write after a timed-out write succeeded")
	}
}

func TestRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	var s tcp.Stack
	_, err = s.Dial(context.Background(), addr, clientConfig())
	if !errors.Is(err, post.ErrRefused) {
		t.Fatalf("dial closed port: %v", err)
	}
	var oe *post.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" || oe.Stack != "tcp" {
		t.Fatalf("error %#v is not a dial OpError", err)
	}
}

// A server that accepts TCP but never answers the handshake.
func TestHandshakeTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	var s tcp.Stack
	cfg := clientConfig()
	cfg.HandshakeTimeout = 50 * time.Millisecond
	_, err = s.Dial(context.Background(), l.Addr().(*net.TCPAddr).AddrPort(), cfg)
	if !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("dial silent server: %v", err)
	}
}

func TestDialCancelled(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Dial(ctx, ln.Addr(), clientConfig()); !errors.Is(err, context.Canceled) {
		t.Fatalf("dial with cancelled ctx: %v", err)
	}
}

func testAuth(t *testing.T, scfg, ccfg *psi.Config, wantErr error) {
	t.Helper()
	var s tcp.Stack
	ln := listen(t, s, scfg)
	c, err := s.Dial(context.Background(), ln.Addr(), ccfg)
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("dial: %v, want %v", err, wantErr)
		}
		// The listener still serves good clients.
		if scfg.Security.PSK == nil && !scfg.Security.ClientAuth {
			connect(t, s, ln, clientConfig())
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sv, err := ln.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	if err := c.WriteMessage(context.Background(), []byte("hi"), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sv, 10); err != nil || string(m) != "hi" {
		t.Fatalf("got %q, %v", m, err)
	}
}

func TestAuthentication(t *testing.T) {
	pin := psi.PinCertificate(certs.Leaf.Leaf)
	other := testcert.Must()
	psk := []byte("0123456789abcdef0123456789abcdef")
	t.Run("chain", func(t *testing.T) {
		testAuth(t, serverConfig(), clientConfig(), nil)
	})
	t.Run("chain wrong CA", func(t *testing.T) {
		testAuth(t, serverConfig(), &psi.Config{Security: psi.Security{RootCAs: other.Pool}}, post.ErrAuthentication)
	})
	t.Run("chain wrong name", func(t *testing.T) {
		testAuth(t, serverConfig(), &psi.Config{Security: psi.Security{RootCAs: certs.Pool, ServerName: "example.com"}}, post.ErrAuthentication)
	})
	t.Run("pinned", func(t *testing.T) {
		testAuth(t, serverConfig(), &psi.Config{Security: psi.Security{PinnedKeys: []psi.Pin{pin}}}, nil)
	})
	t.Run("wrong pin", func(t *testing.T) {
		testAuth(t, serverConfig(), &psi.Config{Security: psi.Security{PinnedKeys: []psi.Pin{{1, 2, 3}}}}, post.ErrAuthentication)
	})
	t.Run("psk", func(t *testing.T) {
		cfg := &psi.Config{Security: psi.Security{PSK: psk}}
		testAuth(t, cfg, cfg, nil)
	})
	t.Run("wrong psk", func(t *testing.T) {
		testAuth(t, &psi.Config{Security: psi.Security{PSK: psk}},
			&psi.Config{Security: psi.Security{PSK: []byte("another key of sixteen bytes or more")}}, post.ErrAuthentication)
	})
	t.Run("client auth", func(t *testing.T) {
		scfg := serverConfig()
		scfg.Security.ClientAuth = true
		scfg.Security.RootCAs = certs.Pool
		ccfg := clientConfig()
		ccfg.Security.Certificates = []tls.Certificate{certs.Leaf}
		testAuth(t, scfg, ccfg, nil)
	})
	t.Run("client auth wrong certificate", func(t *testing.T) {
		scfg := serverConfig()
		scfg.Security.ClientAuth = true
		scfg.Security.RootCAs = certs.Pool
		ccfg := clientConfig()
		ccfg.Security.Certificates = []tls.Certificate{other.Leaf}
		testAuth(t, scfg, ccfg, post.ErrAuthentication)
	})
	t.Run("client auth identity", func(t *testing.T) {
		scfg := serverConfig()
		scfg.Security.ClientAuth = true
		scfg.Security.RootCAs = certs.Pool
		ccfg := clientConfig()
		ccfg.Security.Certificates = []tls.Certificate{certs.Leaf}
		var s tcp.Stack
		c, sv := connect(t, s, listen(t, s, scfg), ccfg)
		for _, tr := range []psi.Transient{c, sv} {
			if id, ok := psi.PeerIdentityOf(tr); !ok || !id.Verified || id.Pin != pin {
				t.Fatalf("peer identity %+v, %v", id, ok)
			}
		}
		f, err := c.Fork(context.Background(), psi.Wine)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if id, _ := psi.PeerIdentityOf(f); id.Pin != pin {
			t.Fatalf("fork's peer identity %+v", id)
		}
	})
	t.Run("client auth missing", func(t *testing.T) {
		scfg := serverConfig()
		scfg.Security.ClientAuth = true
		scfg.Security.RootCAs = certs.Pool
		testAuth(t, scfg, clientConfig(), post.ErrAuthentication)
	})
}

func TestListenNeedsIdentity(t *testing.T) {
	var s tcp.Stack
	if _, err := s.Listen(context.Background(), loopback, nil); err == nil {
		t.Fatal("listener without a certificate or PSK")
	}
}

// Forks from two concurrent clients reach the right parent's AcceptFork,
// never Listener.Accept.
func TestFork(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	ctx := context.Background()
	const clients, forks = 2, 3

	// Accept roots and report them by the name in their first message.
	roots := make(chan [2]any, clients)
	acceptDone := make(chan int)
	go func() {
		n := 0
		for {
			tr, err := ln.Accept(ctx)
			if err != nil {
				acceptDone <- n
				return
			}
			n++
			m, err := recv(tr, 100)
			roots <- [2]any{string(m), tr}
			if err != nil {
				t.Error(err)
			}
		}
	}()

	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.Dial(ctx, ln.Addr(), clientConfig())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if err := c.WriteMessage(ctx, fmt.Appendf(nil, "client %d", i), true, nil); err != nil {
				t.Error(err)
				return
			}
			for j := range forks {
				f, err := c.Fork(ctx, psi.Wine)
				if err != nil {
					t.Error(err)
					return
				}
				if f.Association() != c.Association() {
					t.Error("fork in another association")
				}
				if err := f.WriteMessage(ctx, fmt.Appendf(nil, "client %d fork %d", i, j), true, nil); err != nil {
					t.Error(err)
				}
				// Wait for the echo so the fork is known to be delivered.
				if m, err := recv(f, 100); err != nil || !strings.HasPrefix(string(m), "echo") {
					t.Errorf("fork echo %q, %v", m, err)
				}
				f.Close()
			}
		}()
	}

	for range clients {
		r := <-roots
		name, root := r[0].(string), r[1].(psi.Transient)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer root.Close()
			for range forks {
				f, err := root.AcceptFork(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				m, err := recv(f, 100)
				if err != nil {
					t.Error(err)
				}
				if !strings.HasPrefix(string(m), name+" ") {
					t.Errorf("%s got fork %q", name, m)
				}
				f.WriteMessage(ctx, []byte("echo"), true, nil)
				f.Close()
			}
		}()
	}
	wg.Wait()
	ln.Close()
	if n := <-acceptDone; n != clients {
		t.Fatalf("Accept returned %d transients, want %d", n, clients)
	}
}

// A fork of a fork goes to the fork's AcceptFork.
func TestForkOfFork(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	c, sv := connect(t, s, ln, clientConfig())
	ctx := context.Background()
	f1, err := c.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	sf1, err := sv.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf1.Close()
	f2, err := f1.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	sf2, err := sf1.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf2.Close()
	if err := f2.WriteMessage(ctx, []byte("grandchild"), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sf2, 100); err != nil || string(m) != "grandchild" {
		t.Fatalf("%q, %v", m, err)
	}
}

func TestForkErrors(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	c, sv := connect(t, s, ln, clientConfig())
	ctx := context.Background()
	if _, err := c.Fork(ctx, psi.Milk); !errors.Is(err, post.ErrNotSupported) {
		t.Errorf("milk fork: %v", err)
	}
	if _, err := sv.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrNotSupported) {
		t.Errorf("server fork: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.AcceptFork(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("client AcceptFork: %v", err)
	}
	// Once the server's parent is closed, forks of it are refused.
	sv.Close()
	if _, err := c.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrRefused) {
		t.Errorf("fork of a closed parent: %v", err)
	}
}

// A message over the receiver's limit streams through in parts.
func TestOverLimitStreams(t *testing.T) {
	var s tcp.Stack
	scfg := serverConfig()
	scfg.MaxMessageSize = 1 << 10
	ln := listen(t, s, scfg)
	c1, sv1 := connect(t, s, ln, clientConfig())
	ctx := context.Background()
	if err := c1.WriteMessage(ctx, make([]byte, 8<<10), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sv1, 100); err != nil || len(m) != 8<<10 {
		t.Fatalf("over-limit message: %d bytes, %v", len(m), err)
	}
}

// The Line framer carries text messages; content with CR or LF is refused
// without breaking the transient.
func TestLineFramer(t *testing.T) {
	s := tcp.Stack{Framer: framer.Line{}}
	c, sv := connect(t, s, listen(t, s, serverConfig()), clientConfig())
	ctx := context.Background()
	if err := c.WriteMessage(ctx, []byte("bad\nline"), true, nil); err == nil {
		t.Fatal("LF accepted")
	}
	for _, m := range []string{"HELO example.com", "", "QUIT"} {
		if err := c.WriteMessage(ctx, []byte(m), true, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := recv(sv, 4); err != nil || string(got) != m {
			t.Fatalf("got %q, %v, want %q", got, err, m)
		}
	}
}

func TestPath(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	c, sv := connect(t, s, ln, clientConfig())
	c.WriteMessage(context.Background(), []byte("x"), true, nil)
	recv(sv, 1)
	p := c.Path()
	if p.Remote != ln.Addr() || !p.Local.IsValid() || !p.Active {
		t.Fatalf("client path %v", p)
	}
	if sp := sv.Path(); sp.Local != p.Remote || sp.Remote != p.Local {
		t.Fatalf("server path %v, client path %v", sp, p)
	}
	if ps := c.Paths(); len(ps) != 1 || ps[0].Remote != p.Remote {
		t.Fatalf("Paths = %v", ps)
	}
	t.Logf("path %v rtt %v mtu %d", p, p.RTT, p.MTU)
	if runtime.GOOS == "linux" && p.MTU == 0 {
		t.Errorf("no TCP_INFO on linux: %+v", p)
	}
	c.Close()
	if c.Path().Active {
		t.Error("closed transient's path is active")
	}
}

func TestListenerClose(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept(context.Background())
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, post.ErrClosed) {
		t.Fatalf("pending Accept: %v", err)
	}
	if _, err := ln.Accept(context.Background()); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := s.Dial(context.Background(), ln.Addr(), clientConfig()); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("dial closed listener: %v", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Closing a listener drops transients it had not handed to Accept, while
// accepted ones keep working.
func TestListenerCloseKeepsAccepted(t *testing.T) {
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	c1, sv1 := connect(t, s, ln, clientConfig())
	ctx := context.Background()
	c2, err := s.Dial(ctx, ln.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ln.Close()
	if _, err := recv(c2, 10); err == nil {
		t.Error("unaccepted transient survived listener close")
	}
	if err := c1.WriteMessage(ctx, []byte("alive"), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sv1, 10); err != nil || string(m) != "alive" {
		t.Fatalf("accepted transient after listener close: %q, %v", m, err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		var s tcp.Stack
		ln, err := s.Listen(context.Background(), loopback, serverConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx := context.Background()
		for range 3 {
			c, err := s.Dial(ctx, ln.Addr(), clientConfig())
			if err != nil {
				t.Fatal(err)
			}
			sv, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f, err := c.Fork(ctx, psi.Wine)
			if err != nil {
				t.Fatal(err)
			}
			sf, err := sv.AcceptFork(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Reads cancelled by contexts, and a fork never accepted.
			cctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			sv.ReadMessage(cctx, make([]byte, 1))
			cancel()
			unaccepted, err := c.Fork(ctx, psi.Wine)
			if err != nil {
				t.Fatal(err)
			}
			defer unaccepted.Close()
			f.WriteMessage(ctx, []byte("x"), true, nil)
			recv(sf, 1)
			for _, tr := range []psi.Transient{f, sf, c, sv} {
				tr.Close()
			}
		}
		// One connection left mid-handshake.
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
	}()
	var after int
	for range 200 {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines before, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

// Close gives a writer blocked by a peer that does not read the Stack's
// linger time, then drops the connection.
func TestCloseWithBlockedWriter(t *testing.T) {
	s := tcp.Stack{Linger: 20 * time.Millisecond}
	c, sv := connect(t, s, listen(t, s, serverConfig()), clientConfig())
	_ = sv // never reads
	errc := make(chan error, 1)
	go func() {
		big := make([]byte, 1<<20)
		for {
			if err := c.WriteMessage(context.Background(), big, true, nil); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond) // let the writer fill the socket buffers
	c.Close()
	if err := <-errc; !errors.Is(err, post.ErrClosed) {
		t.Fatalf("blocked writer after Close: %v", err)
	}
}

func TestLocalAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	var s tcp.Stack
	ln := listen(t, s, serverConfig())
	cfg := clientConfig()
	cfg.Local = local
	c, sv := connect(t, s, ln, cfg)
	if c.Path().Local != local || sv.Path().Remote != local {
		t.Fatalf("client path %v, server path %v, want local %v", c.Path(), sv.Path(), local)
	}
	// Forks cannot share the port; they keep the address.
	f, err := c.Fork(context.Background(), psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fl := f.Path().Local; fl.Addr() != local.Addr() || fl.Port() == local.Port() {
		t.Fatalf("fork local %v", fl)
	}
}

func TestIPv6(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	l.Close()
	var s tcp.Stack
	ln, err := s.Listen(context.Background(), netip.MustParseAddrPort("[::1]:0"), serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, sv := connect(t, s, ln, clientConfig())
	if err := c.WriteMessage(context.Background(), []byte("v6"), true, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := recv(sv, 10); err != nil || string(m) != "v6" {
		t.Fatalf("%q, %v", m, err)
	}
	if !c.Path().Remote.Addr().Is6() {
		t.Fatalf("path %v", c.Path())
	}
}
