package fsp

import (
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
