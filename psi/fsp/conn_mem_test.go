package fsp

import (
	"testing"
	"time"
)

// TestCompactAfterBurst: a burst grows the send window, the receive
// window, the read queue and the loop's queue; a second or so after it
// the connection has given that memory back.
func TestCompactAfterBurst(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.KeepAlive, ccfg.KeepAlive = -1, -1
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	msg := randBytes(256 << 10)
	// The reader waits until the burst is queued, so the read queue grows.
	for range 16 {
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	grown := func(x *Conn) bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		return x.oversized()
	}
	for range 16 {
		if _, err := s.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !grown(c) && !grown(s) {
		t.Log("the burst left nothing oversized")
	}
	// The loop's queue: capacity past loopIdleCap, in either slice.
	queued := func(x *Conn) int {
		x.inq.mu.Lock()
		defer x.inq.mu.Unlock()
		return cap(x.inq.pkts) + cap(x.inq.spare)
	}
	deadline := time.Now().Add(5 * time.Second)
	for grown(c) || grown(s) || queued(c) > 2*loopIdleCap || queued(s) > 2*loopIdleCap {
		if time.Now().After(deadline) {
			t.Fatalf("buffers still oversized 5 s after the burst: sender %v, receiver %v, loop queues %d and %d", grown(c), grown(s), queued(c), queued(s))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And the connection works on.
	if err := c.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReceiveMessage(ctx); err != nil || len(got) != len(msg) {
		t.Fatalf("after compaction: %d bytes, %v", len(got), err)
	}
}
