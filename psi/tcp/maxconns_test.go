package tcp

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/psitest"
)

func dialFrom(l *listener, from string) (psi.Transient, error) {
	cfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}, Local: netip.MustParseAddrPort(from + ":0")}
	return Stack{}.Dial(context.Background(), l.Addr(), cfg)
}

// waitConns waits, up to 2 s, for the listener to count n transients from
// addr and hold no more sources than srcs.
func waitConns(t *testing.T, l *listener, addr string, n, srcs int) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got, gotSrcs := l.conns.Of(a), l.conns.Sources()
		if got == n && gotSrcs <= srcs {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d transients (want %d), %d sources (want at most %d)", addr, got, n, gotSrcs, srcs)
		}
	}
}

// One source holds at most MaxConnsPerSource live roots, accepted or not;
// the next is refused with back-pressure, other sources still connect,
// and a closed transient, however it ended, makes room again.
func TestMaxConnsPerSource(t *testing.T) {
	l := testListener(t, Stack{MaxConnsPerSource: 8})
	ctx := context.Background()
	var clients, servers []psi.Transient
	for i := range 8 {
		c, err := dialFrom(l, "127.0.0.2")
		if err != nil {
			t.Fatalf("root %d: %v", i, err)
		}
		clients = append(clients, c)
		if i < 6 { // two stay in the accept queue
			s, err := l.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			servers = append(servers, s)
		}
	}
	waitConns(t, l, "127.0.0.2", 8, 1)
	if _, err := dialFrom(l, "127.0.0.2"); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("9th root from one source: %v, want ErrRefused", err)
	}
	other, err := dialFrom(l, "127.0.0.1")
	if err != nil {
		t.Fatalf("another source: %v", err)
	}

	// Close, Abort, and the peer's reset seen and closed: each frees one.
	servers[0].Close()
	clients[0].Close()
	c, err := dialFrom(l, "127.0.0.2")
	if err != nil {
		t.Fatalf("after a Close: %v", err)
	}
	clients[0] = c
	servers[1].(psi.Aborter).Abort(nil)
	waitConns(t, l, "127.0.0.2", 7, 2)
	clients[2].(psi.Aborter).Abort(nil)
	if _, _, err := servers[2].ReadMessage(ctx, make([]byte, 10)); err == nil || err == io.EOF {
		t.Fatalf("read after the peer's reset: %v", err)
	}
	servers[2].Close()
	waitConns(t, l, "127.0.0.2", 6, 2)
	for range 2 {
		c, err := dialFrom(l, "127.0.0.2")
		if err != nil {
			t.Fatalf("after Abort and reset: %v", err)
		}
		clients = append(clients, c)
	}
	if _, err := dialFrom(l, "127.0.0.2"); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("over the quota again: %v", err)
	}

	// Closing the listener drops the unaccepted roots and uncounts them;
	// the accepted ones count until they close.
	l.Close()
	waitConns(t, l, "127.0.0.2", 3, 2) // servers 3, 4, 5
	for _, s := range servers[3:] {
		s.Close()
	}
	other.Close()
	for _, c := range clients {
		c.Close()
	}
	waitConns(t, l, "127.0.0.2", 0, 1) // the other source's is accepted, never closed
}

// Forks count against their source's quota too, accepted or waiting in
// AcceptFork's queue, and a parent's close uncounts its unaccepted forks.
func TestMaxConnsPerSourceForks(t *testing.T) {
	l := testListener(t, Stack{MaxConnsPerSource: 4})
	ctx := context.Background()
	c, root := rootFrom(t, l, "127.0.0.2")
	var forks []psi.Transient
	for i := range 3 {
		f, err := c.Fork(ctx, psi.Wine)
		if err != nil {
			t.Fatalf("fork %d: %v", i, err)
		}
		defer f.Close()
		forks = append(forks, f)
	}
	if _, err := c.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrBackpressure) {
		t.Fatalf("fork over the quota: %v, want ErrBackpressure", err)
	}
	sf, err := root.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sf.Close()
	f, err := c.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatalf("fork after one closed: %v", err)
	}
	defer f.Close()
	waitConns(t, l, "127.0.0.2", 4, 1)
	// The root's close drops its three unaccepted forks.
	root.Close()
	waitConns(t, l, "127.0.0.2", 0, 0)
}

// A fork refused by a full fork queue or by the quota, a fork naming an
// unknown parent and a refused root are uncounted, and everything closed
// leaves the count map empty.
func TestConnCountEmpties(t *testing.T) {
	// The handshake timeout ends the queued fork's wait (at three
	// quarters of it), but it also bounds every fork's TLS handshake and
	// hello, which took over 400 ms on a loaded host under -race.
	l := testListener(t, Stack{MaxConnsPerSource: 3, MaxUnacceptedForks: 1, ServerHandshakeTimeout: 2 * time.Second})
	ctx := context.Background()
	c, root := rootFrom(t, l, "127.0.0.2")
	f1, err := c.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	// The fork queue's one place is taken: the next fork waits, counted,
	// and is refused.
	if _, err := c.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrBackpressure) {
		t.Fatalf("over the fork queue: %v", err)
	}
	waitConns(t, l, "127.0.0.2", 2, 1)
	sf1, err := root.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := c.Fork(ctx, psi.Wine) // left in the fork queue
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if _, err := c.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrBackpressure) {
		t.Fatalf("over the quota: %v", err)
	}
	if _, err := dialFrom(l, "127.0.0.2"); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("root over the quota: %v", err)
	}
	// A fork naming no transient, from another source.
	raw := rawClient(t, l.Addr(), nil)
	if _, err := raw.Write((&clientHello{kind: kindFork, parent: token{1}}).marshal()); err != nil {
		t.Fatal(err)
	}
	var buf [serverHelloLen]byte
	if _, err := io.ReadFull(raw, buf[:]); err != nil {
		t.Fatal(err)
	}
	if sh, err := parseServerHello(buf[:]); err != nil || sh.status != statusUnknown {
		t.Fatalf("fork of no parent: %+v, %v", sh, err)
	}
	waitConns(t, l, "127.0.0.2", 3, 1)
	root.Close() // drops f2's server side, unaccepted
	waitConns(t, l, "127.0.0.2", 1, 1)
	sf1.Close()
	waitConns(t, l, "127.0.0.2", 0, 0)
	if n := l.conns.Sources(); n != 0 {
		t.Fatalf("%d sources left in the count map", n)
	}
}

// rootFrom dials l from ip and accepts the root; the client end closes
// with the test.
func rootFrom(t *testing.T, l *listener, ip string) (c, root psi.Transient) {
	t.Helper()
	c, err := dialFrom(l, ip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	root, err = l.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c, root
}

// TestMaxConnsPerSourceSuite runs the per-source bound every stack keeps
// (psitest.ConnsPerSource): 4 roots from one address, the fifth refused
// with post.ErrRefused as on FSP and QUIC.
func TestMaxConnsPerSourceSuite(t *testing.T) {
	l := testListener(t, Stack{MaxConnsPerSource: 4})
	psitest.ConnsPerSource(t, l, 4, func(ctx context.Context, from string) (psi.Transient, error) {
		cfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}, Local: netip.MustParseAddrPort(from + ":0")}
		return Stack{}.Dial(ctx, l.Addr(), cfg)
	}, func(from string) int { return l.conns.Of(netip.MustParseAddr(from)) })
}
