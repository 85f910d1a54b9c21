package fsp

import (
	"net/netip"
	"testing"
	"time"
)

// TestQueuedBytesBounded: connections whose loops are stalled (their
// locks held) cannot together queue more than the Transport's bound; the
// excess is dropped and counted, and the connections recover.
func TestQueuedBytesBounded(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.KeepAlive, ccfg.KeepAlive = -1, -1
	l := listen(t, scfg)
	const limit = 40 * bufCost
	l.t.queueCap = limit
	const n = 6
	cs, ss := make([]*Conn, n), make([]*Conn, n)
	for i := range n {
		cs[i], ss[i] = connect(t, l, ccfg)
	}
	for _, s := range ss {
		s.mu.Lock()
	}
	ctx := testContext(t)
	msg := randBytes(64 << 10)
	for _, c := range cs {
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	var peak int64
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		peak = max(peak, l.t.queued.Load())
		time.Sleep(time.Millisecond)
	}
	for _, s := range ss {
		s.mu.Unlock()
	}
	if peak > limit {
		t.Fatalf("queued %d bytes, bound %d", peak, limit)
	}
	var dropped uint64
	for _, s := range ss {
		if got, err := s.ReceiveMessage(ctx); err != nil || len(got) != len(msg) {
			t.Fatalf("after the stall: %d bytes, %v", len(got), err)
		}
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
	l := listen(t, scfg)
	// Three stalled connections queue 135 datagrams without a bound,
	// more than the Transport's 130; the other peer's burst is 45.
	const peerLimit = 60 * bufCost
	l.t.queueCap, l.t.peerCap = 130*bufCost, peerLimit
	const n = 3
	cs, ss := make([]*Conn, n), make([]*Conn, n)
	for i := range n {
		cs[i], ss[i] = connect(t, l, ccfg)
	}
	for _, s := range ss {
		s.mu.Lock()
	}
	ctx := testContext(t)
	msg := randBytes(64 << 10)
	for _, c := range cs {
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	var peak int64
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
		peak = max(peak, l.t.queued.Load())
		time.Sleep(time.Millisecond)
	}
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
	if err := other.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReceiveMessage(ctx); err != nil || len(got) != len(msg) {
		t.Fatalf("the other peer: %d bytes, %v", len(got), err)
	}
	for _, s := range ss {
		s.mu.Unlock()
	}
	if d := os.Stats().QueueDropped; d != 0 {
		t.Errorf("the other peer had %d datagrams dropped", d)
	}
	for _, s := range ss {
		if got, err := s.ReceiveMessage(ctx); err != nil || len(got) != len(msg) {
			t.Fatalf("after the stall: %d bytes, %v", len(got), err)
		}
	}
	l.t.mu.Lock()
	peers := len(l.t.peers)
	l.t.mu.Unlock()
	if peers != 2 {
		t.Errorf("%d peers counted, want 2", peers)
	}
}
