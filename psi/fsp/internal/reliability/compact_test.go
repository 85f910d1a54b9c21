package reliability

import (
	"testing"
	"time"
)

// TestSenderCompact: after a burst is acknowledged the sender holds a
// large window and many recycled entries; Compact gives them back, keeps
// what is in flight, and the sender works on.
func TestSenderCompact(t *testing.T) {
	s := NewSender[int](1)
	now := time.Now()
	var res AckResult[int]
	burst := func(n int) {
		for i := range n {
			s.Push(i, 100)
		}
		for e := s.NextToSend(1 << 62); e != nil; e = s.NextToSend(1 << 62) {
			s.OnSent(e, now)
		}
	}
	burst(5000)
	// A hole at 10 and 11, so the retransmission queue fills too.
	s.OnAck(now, 10, []Gap{{Gap: 2, Data: 4000}}, 4011, time.Second, &res)
	s.OnAck(now, 5001, nil, 5000, time.Second, &res)
	if s.Len() != 0 || !s.Oversized() {
		t.Fatalf("after the burst: len %d, oversized %v", s.Len(), s.Oversized())
	}
	s.Compact()
	if s.Oversized() || s.entries.buf != nil || len(s.free) > minRing || cap(s.free) > 4*minRing {
		t.Fatalf("after Compact: ring %d, free %d (cap %d)", len(s.entries.buf), len(s.free), cap(s.free))
	}
	// A smaller window in flight survives Compact intact.
	burst(100)
	s.OnAck(now, 5051, nil, 5050, time.Second, &res)
	s.Compact()
	if s.Len() != 50 || s.Base() != 5051 || len(s.entries.buf) > 4*fitSize(50) {
		t.Fatalf("len %d base %d ring %d", s.Len(), s.Base(), len(s.entries.buf))
	}
	for seq := uint64(5051); seq <= 5100; seq++ {
		if e := s.Get(seq); e == nil || e.Seq != seq || !e.Sent {
			t.Fatalf("entry %d lost by Compact", seq)
		}
	}
	s.OnAck(now, 5101, nil, 5100, time.Second, &res)
	if s.Len() != 0 || s.BytesInFlight() != 0 {
		t.Fatalf("len %d in flight %d", s.Len(), s.BytesInFlight())
	}
}

// TestReceiverCompact: a loss episode grows the window's buffer; once it
// is repaired, Compact frees it, and the receiver goes on in order.
func TestReceiverCompact(t *testing.T) {
	r := NewReceiver[uint64](1)
	for seq := uint64(2); seq <= 3000; seq++ {
		r.Insert(seq, seq, 1<<62)
	}
	if r.Compact(); len(r.slots.buf) < 3000 {
		t.Fatalf("Compact dropped held entries: %d slots", len(r.slots.buf))
	}
	r.Insert(1, 1, 1<<62)
	for want := uint64(1); want <= 3000; want++ {
		if v, ok := r.Pop(); !ok || v != want {
			t.Fatalf("pop %d: %d, %v", want, v, ok)
		}
	}
	if !r.Oversized() {
		t.Fatal("an empty window of 4,096 slots is not oversized")
	}
	r.Compact()
	if r.Oversized() || r.slots.buf != nil {
		t.Fatalf("after Compact: %d slots", len(r.slots.buf))
	}
	r.Insert(3002, 3002, 1<<62)
	r.Insert(3001, 3001, 1<<62)
	if v, ok := r.Pop(); !ok || v != 3001 {
		t.Fatalf("after Compact: pop %d, %v", v, ok)
	}
	if v, ok := r.Pop(); !ok || v != 3002 {
		t.Fatalf("after Compact: pop %d, %v", v, ok)
	}
}

// TestRingShrink keeps the order of a wrapped ring.
func TestRingShrink(t *testing.T) {
	var q ring[int]
	for i := range 1000 {
		q.PushBack(i)
	}
	for range 990 {
		q.PopFront()
	}
	for i := 1000; i < 1010; i++ {
		q.PushBack(i) // wraps around
	}
	q.Shrink()
	if len(q.buf) != fitSize(20) || q.Len() != 20 {
		t.Fatalf("shrunk to %d slots, %d elements", len(q.buf), q.Len())
	}
	for i := range 20 {
		if q.At(i) != 990+i {
			t.Fatalf("element %d is %d", i, q.At(i))
		}
	}
}
