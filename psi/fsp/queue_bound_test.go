package fsp

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestQueuedBytesBounded: connections whose loops are stalled (their
// locks held) cannot together queue more than the Transport's bound; the
// excess is dropped and counted, and the connections recover.
func TestQueuedBytesBounded(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.KeepAlive, ccfg.KeepAlive = -1, -1
	const limit = 40 * bufCost
	l := listenCapped(t, scfg, limit, 0)
	ctx := testContext(t)
	msg := randBytes(64 << 10)
	ss, peak, resume := stalledSends(t, ctx, l, ccfg, 6, msg, 300*time.Millisecond)
	resume()
	if peak > limit {
		t.Fatalf("queued %d bytes, bound %d", peak, limit)
	}
	var dropped uint64
	for _, s := range ss {
		dropped += s.Stats().QueueDropped
	}
	if dropped == 0 {
		t.Fatal("nothing dropped past the bound")
	}
	t.Logf("peak %d of %d bytes queued, %d dropped", peak, limit, dropped)
	for end := time.Now().Add(time.Second); l.t.queued.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d bytes still charged a second after the stall", l.t.queued.Load())
		}
	}
}

// TestQueuedBytesPerPeer: one peer address's connections, their loops
// stalled, cannot queue more than the per-peer bound, so another peer's
// connection still gets its datagrams queued, none dropped.
func TestQueuedBytesPerPeer(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.KeepAlive, ccfg.KeepAlive = -1, -1
	// Three stalled connections queue 135 datagrams without a bound,
	// more than the Transport's 130. The other peer sends 12 datagrams:
	// on a slow host its retransmissions queue too, and a 45-datagram
	// burst sent twice went past the room left (3 dropped under -race).
	const peerLimit = 60 * bufCost
	l := listenCapped(t, scfg, 130*bufCost, peerLimit)
	ctx := testContext(t)
	msg := randBytes(64 << 10)
	_, peak, resume := stalledSends(t, ctx, l, ccfg, 3, msg, 200*time.Millisecond)
	if peak > peerLimit {
		t.Errorf("one peer queued %d bytes, per-peer bound %d", peak, peerLimit)
	}
	// Another peer, while the first is still stalled.
	other, err := dialUDP(ctx, netip.MustParseAddrPort("127.0.0.2:0"), addrOf(l), ccfg)
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	defer other.Close()
	os, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Close()
	small := msg[:16<<10]
	if err := other.SendMessage(ctx, small); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReceiveMessage(ctx); err != nil || len(got) != len(small) {
		t.Fatalf("the other peer: %d bytes, %v", len(got), err)
	}
	resume()
	if d := os.Stats().QueueDropped; d != 0 {
		t.Errorf("the other peer had %d datagrams dropped", d)
	}
	l.t.mu.Lock()
	peers := len(l.t.peers)
	l.t.mu.Unlock()
	if peers != 2 {
		t.Errorf("%d peers counted, want 2", peers)
	}
}

// listenCapped is listen with the Transport's queue bounds set before its
// read loop starts, which reads them without a lock (setting them on a
// running listener was a data race the race detector reported).
func listenCapped(t *testing.T, cfg *Config, queueCap, peerCap int64) *Listener {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	tr := &Transport{Conn: pc, owned: true, queueCap: queueCap, peerCap: peerCap}
	l, err := tr.Listen(cfg)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	l.ownsTransport = true
	t.Cleanup(func() { l.Close() })
	return l
}

// stalledSends connects n clients to l, stalls the loops of their server
// connections (their locks held) and sends msg on each. It returns the
// server connections, still stalled, the most bytes l's Transport queued
// during d, and resume, which lets them go on and checks that each then
// receives msg whole (the test's end lets them go on if it did not).
func stalledSends(t *testing.T, ctx context.Context, l *Listener, ccfg *Config, n int, msg []byte, d time.Duration) (ss []*Conn, peak int64, resume func()) {
	t.Helper()
	cs := make([]*Conn, n)
	ss = make([]*Conn, n)
	for i := range n {
		cs[i], ss[i] = connect(t, l, ccfg)
	}
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			for _, s := range ss {
				s.mu.Unlock()
			}
		})
	}
	for _, s := range ss {
		s.mu.Lock()
	}
	t.Cleanup(unlock)
	for _, c := range cs {
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		peak = max(peak, l.t.queued.Load())
		time.Sleep(time.Millisecond)
	}
	return ss, peak, func() {
		t.Helper()
		unlock()
		for _, s := range ss {
			if got, err := s.ReceiveMessage(ctx); err != nil || len(got) != len(msg) {
				t.Fatalf("after the stall: %d bytes, %v", len(got), err)
			}
		}
	}
}

// TestPeerQueueIPv6Host: the connections of one IPv6 /64 share one
// peer's queue bound, as every per-address bound counts a /64 as one
// source; another /64 has its own, and nothing stays counted once they
// are gone. Before, each address of a /64 had a quarter of its own.
func TestPeerQueueIPv6Host(t *testing.T) {
	tr := &Transport{}
	conn := func(a string) *Conn {
		c := &Conn{remote: peerAddr{ap: netip.MustParseAddrPort(a)}}
		tr.joinPeer(c)
		return c
	}
	a, b, c := conn("[2001:db8:0:1::1]:443"), conn("[2001:db8:0:1::2]:443"), conn("[2001:db8:0:2::1]:443")
	if a.pq == nil || a.pq != b.pq || a.pq == c.pq {
		t.Fatalf("peer queues: %p %p %p, want the first two shared", a.pq, b.pq, c.pq)
	}
	for _, x := range []*Conn{a, b, c} {
		tr.leavePeer(x)
	}
	if len(tr.peers) != 0 {
		t.Fatalf("%d peers still counted", len(tr.peers))
	}
}
