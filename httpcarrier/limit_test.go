package httpcarrier

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/fronttest"
	"github.com/postsockets/postsockets/post"
)

// limitedServer serves h on loopback behind LimitListener(perAddr,
// total) and returns its address.
func limitedServer(t *testing.T, h http.Handler, perAddr, total int) (string, *ConnLimiter) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := LimitListener(ln, perAddr, total)
	srv := &http.Server{Handler: h, ConnState: lim.ConnState}
	go srv.Serve(lim)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), lim
}

func TestLimitListenerPerAddr(t *testing.T) {
	addr, lim := limitedServer(t, fronttest.SlowHandler(nil), 4, 0)
	fronttest.PerAddr(t, addr, 4)
	if n := lim.Open(); n > 5 {
		t.Fatalf("%d connections counted, at most 5 open", n)
	}
}

func TestLimitListenerTotal(t *testing.T) {
	release := make(chan struct{})
	addr, _ := limitedServer(t, fronttest.SlowHandler(release), 4, 6)
	fronttest.Total(t, addr, release)
}

// TestLimitListenerSlowHeads: connections sending their request heads
// slowly are evicted for a newcomer after a second, as silent ones are,
// not kept until the header timeout.
func TestLimitListenerSlowHeads(t *testing.T) {
	addr, _ := limitedServer(t, fronttest.SlowHandler(nil), 4, 6)
	fronttest.SlowHeads(t, addr)
}

// TestLimitListenerUntracked: a server that does not report its
// connections' states to the limiter gets no eviction: a newcomer past
// the total is closed, and the connections held keep working. Before,
// they all looked new and silent after a second, and a request could be
// cut.
func TestLimitListenerUntracked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fronttest.SlowHandler(nil)}
	go srv.Serve(LimitListener(ln, 0, 2))
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	held := []net.Conn{fronttest.DialFrom(t, "127.0.0.5", addr), fronttest.DialFrom(t, "127.0.0.5", addr)}
	for _, c := range held {
		if err := fronttest.Get(c); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	if err := fronttest.Get(fronttest.DialFrom(t, "127.0.0.6", addr)); err == nil {
		t.Fatal("a newcomer past the total was served")
	}
	for _, c := range held {
		if err := fronttest.Get(c); err != nil {
			t.Fatalf("a connection held was closed: %v", err)
		}
	}
}

// TestLimitListenerCounts: every connection closed, by either side, by
// eviction or refusal, gives its place back; nothing stays counted.
func TestLimitListenerCounts(t *testing.T) {
	addr, lim := limitedServer(t, fronttest.SlowHandler(nil), 2, 3)
	var cs []net.Conn
	for _, ip := range []string{"127.0.0.5", "127.0.0.5", "127.0.0.5", "127.0.0.6", "127.0.0.7"} {
		c := fronttest.DialFrom(t, ip, addr)
		fronttest.Get(c)
		cs = append(cs, c)
	}
	if n := lim.Open(); n > 3 {
		t.Fatalf("%d connections counted, limit 3", n)
	}
	for _, c := range cs {
		c.Close()
	}
	fronttest.Eventually(t, 5*time.Second, "places still counted after every client closed", func() error {
		if n := lim.Open(); n != 0 {
			return errors.New("still counted")
		}
		return nil
	})
	lim.mu.Lock()
	addrs, cands, most, holding := len(lim.open), lim.cands, lim.most, len(lim.holding)
	lim.mu.Unlock()
	if addrs != 0 || cands != 0 || most != 0 || holding != 0 {
		t.Fatalf("still counted: %d addresses, %d eviction candidates, most %d, %d counts", addrs, cands, most, holding)
	}
}

// TestLimitListenerMost: the most any address holds follows admissions
// and closes in any order.
func TestLimitListenerMost(t *testing.T) {
	l := LimitListener(nil, 0, 0)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	var as, bs []*limitedConn
	for range 3 {
		as = append(as, l.admit(nopConn{}, a))
	}
	bs = append(bs, l.admit(nopConn{}, b), l.admit(nopConn{}, b))
	check := func(want int) {
		t.Helper()
		if l.most != want {
			t.Fatalf("most %d, want %d (%v)", l.most, want, l.holding)
		}
	}
	check(3)
	as[0].Close()
	check(2)
	bs[0].Close()
	check(2)
	as[1].Close()
	check(1)
	bs[1].Close()
	as[2].Close()
	check(0)
}

// nopConn is a net.Conn whose Close does nothing.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

// BenchmarkLimitListenerBusiest: what refusing a newcomer from the
// busiest address costs a full listener with idle connections elsewhere
// (it looked through all 4,096 before it kept the most any address holds).
func BenchmarkLimitListenerBusiest(b *testing.B) {
	l := LimitListener(nil, 256, 4096)
	busy := netip.MustParseAddr("192.0.2.1")
	for i := range 4096 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i / 16), 1}) // 16 each
		if i < 255 {
			a = busy
		}
		l.ConnState(l.admit(nopConn{}, a), http.StateIdle)
	}
	for b.Loop() {
		if l.admit(nopConn{}, busy) != nil {
			b.Fatal("admitted past the total")
		}
	}
}

// BenchmarkLimitListenerFull: what refusing a newcomer costs a full
// listener whose connections all serve requests (54 µs with 4,096 before
// it counted the candidates: the accept loop looked through them all).
func BenchmarkLimitListenerFull(b *testing.B) {
	l := LimitListener(nil, 256, 4096)
	for i := range 4096 {
		l.admit(nil, netip.AddrFrom4([4]byte{10, 0, byte(i / 256), 1}))
	}
	for c := range l.conns {
		l.ConnState(c, http.StateActive)
	}
	a := netip.MustParseAddr("192.0.2.1")
	for b.Loop() {
		if l.admit(nil, a) != nil {
			b.Fatal("admitted past the total")
		}
	}
}

// TestLimitedConnCloseWrite: a connection that cannot half-close says
// so, instead of returning nil.
func TestLimitedConnCloseWrite(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	lc := &limitedConn{Conn: a, l: LimitListener(nil, 0, 0)}
	lc.l.conns[lc] = struct{}{}
	lc.l.open[lc.a]++
	if err := lc.CloseWrite(); !errors.Is(err, post.ErrNotSupported) {
		t.Fatalf("CloseWrite on a pipe: %v", err)
	}
	lc.Close()
	if lc.l.Open() != 0 {
		t.Fatal("closed connection still counted")
	}
}
