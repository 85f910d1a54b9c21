package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func TestSlotsQuota(t *testing.T) {
	s := newSlots(4, 1, 2)
	a1, a2 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	a3 := netip.MustParseAddr("10.0.0.3")
	b1, c1 := netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("::ffff:10.0.2.1")
	d1 := netip.MustParseAddr("2001:db8:1:2::1")
	evicted := map[netip.Addr]bool{}
	evict := func(a netip.Addr) func() { return func() { evicted[a] = true } }
	sa1 := s.acquire(a1, evict(a1))
	if sa1 == nil || s.acquire(a1, evict(a1)) != nil {
		t.Fatal("per-address quota")
	}
	if s.acquire(a2, evict(a2)) == nil || s.acquire(a3, evict(a3)) != nil {
		t.Fatal("per-prefix quota")
	}
	if s.acquire(b1, evict(b1)) == nil || s.acquire(c1, evict(c1)) == nil {
		t.Fatal("other prefixes refused")
	}
	// Full: a newcomer from a fresh prefix evicts the oldest handshake of
	// the busiest prefix (10.0.0.0/24 holds two).
	if s.acquire(d1, evict(d1)) == nil || !evicted[a1] || s.inUse() != 4 {
		t.Fatalf("eviction: %v, %d in use", evicted, s.inUse())
	}
	s.release(sa1) // already evicted: no effect
	if s.inUse() != 4 {
		t.Fatalf("double release: %d in use", s.inUse())
	}
	// Every prefix holds one now: a newcomer evicts the oldest.
	if s.acquire(netip.MustParseAddr("10.0.9.1"), evict(a1)) == nil || !evicted[a2] {
		t.Fatalf("eviction of the oldest: %v", evicted)
	}
	// A prefix holding one cannot evict one holding one.
	if s.acquire(netip.MustParseAddr("10.0.9.2"), evict(b1)) != nil || evicted[b1] {
		t.Fatal("evicted a fair share")
	}
}

// idleSockets opens n TCP connections from local to addr that never speak.
func idleSockets(t *testing.T, local netip.Addr, addr netip.AddrPort, n int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
	for range n {
		// Over quota the listener resets them, which Dial may see.
		if c, err := d.Dial("tcp", addr.String()); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
}

// dialMany dials n times, ten a second, and fails on any error.
func dialMany(t *testing.T, addr netip.AddrPort, n int) {
	t.Helper()
	cfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}, HandshakeTimeout: 2 * time.Second}
	for i := range n {
		start := time.Now()
		tr, err := Stack{}.Dial(context.Background(), addr, cfg)
		if err != nil {
			t.Fatalf("dial %d after %v: %v", i, time.Since(start), err)
		}
		tr.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

// Idle sockets from one address, or from many prefixes, never lock out
// another client.
func TestSlowloris(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefixes int
		per      int
	}{{"one address", 1, 300}, {"64 prefixes", 64, 8}} {
		t.Run(tc.name, func(t *testing.T) {
			l := testListener(t, Stack{ServerHandshakeTimeout: 20 * time.Second})
			go func() {
				for {
					tr, err := l.Accept(context.Background())
					if err != nil {
						return
					}
					tr.Close()
				}
			}()
			for p := range tc.prefixes {
				idleSockets(t, netip.AddrFrom4([4]byte{127, 10, byte(p), 1}), l.Addr(), tc.per)
			}
			dialMany(t, l.Addr(), 10)
			if n := l.slots.inUse(); n > l.stack.maxHandshakes() {
				t.Fatalf("%d handshakes in progress", n)
			}
		})
	}
}

// A client that stops after the TCP handshake is dropped after the
// server's short handshake timeout.
func TestServerHandshakeTimeout(t *testing.T) {
	l := testListener(t, Stack{ServerHandshakeTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("server kept an idle handshake: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A full accept queue, or a source's share of it, refuses new roots with
// a clear back-pressure error instead of holding their handshakes.
func TestAcceptQueueFull(t *testing.T) {
	l := testListener(t, Stack{Backlog: 8})
	dial := func(from string) (psi.Transient, error) {
		cfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}, Local: netip.MustParseAddrPort(from + ":0")}
		return Stack{}.Dial(context.Background(), l.Addr(), cfg)
	}
	// One address holds a quarter of the queue.
	for range 2 {
		tr, err := dial("127.0.0.2")
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
	}
	if _, err := dial("127.0.0.2"); !errors.Is(err, post.ErrBackpressure) {
		t.Fatalf("over the address's share: %v", err)
	}
	for i := range 6 {
		tr, err := dial(fmt.Sprintf("127.0.0.%d", 3+i/2))
		if err != nil {
			t.Fatalf("another address: %v", err)
		}
		defer tr.Close()
	}
	if _, err := dial("127.0.0.9"); !errors.Is(err, post.ErrBackpressure) {
		t.Fatalf("full queue: %v", err)
	}
	if _, err := l.Accept(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr, err := dial("127.0.0.9")
	if err != nil {
		t.Fatalf("dial after Accept: %v", err)
	}
	tr.Close()
	// The server frees the slot just after its reply.
	for start := time.Now(); l.slots.inUse() != 0; time.Sleep(time.Millisecond) {
		if time.Since(start) > time.Second {
			t.Fatalf("%d handshake slots held", l.slots.inUse())
		}
	}
}
