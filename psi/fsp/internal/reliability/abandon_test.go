package reliability

import (
	"testing"
	"time"
)

func TestAbandon(t *testing.T) {
	s := NewSender[int](1)
	now := time.Now()
	for i := range 6 {
		s.Push(i, 100)
	}
	for range 3 {
		s.OnSent(s.NextToSend(100), now)
	}
	// 1..3 in flight, 4..6 unsent; lose 2 by a timeout.
	s.OnTimeout(3)
	var got []uint64
	s.Abandon(5, func(e *Entry[int]) { got = append(got, e.Seq) })
	if len(got) != 4 || got[0] != 1 || got[3] != 4 {
		t.Fatalf("abandoned %v", got)
	}
	if s.HasRetransmission() {
		t.Fatal("abandoned entries queued for retransmission")
	}
	if e := s.NextToSend(100); e == nil || e.Seq != 5 {
		t.Fatalf("next to send %+v", e)
	}
	// A cumulative acknowledgement past the skip point retires them, the
	// never-sent one included.
	var res AckResult[int]
	s.OnAck(now, 5, nil, 0, time.Second, &res)
	if s.Base() != 5 || len(res.Acked) != 4 {
		t.Fatalf("base %d, acked %d", s.Base(), len(res.Acked))
	}
}

func TestReceiverSkipTo(t *testing.T) {
	r := NewReceiver[int](1)
	for _, seq := range []uint64{2, 3, 5, 6} {
		r.Insert(seq, int(seq), 100)
	}
	var dropped []int
	r.SkipTo(5, func(v int) { dropped = append(dropped, v) })
	if r.Expected() != 5 || len(dropped) != 2 {
		t.Fatalf("expected %d, dropped %v", r.Expected(), dropped)
	}
	for want := 5; want <= 6; want++ {
		if v, ok := r.Pop(); !ok || v != want {
			t.Fatalf("pop %d %v, want %d", v, ok, want)
		}
	}
	r.SkipTo(3, func(int) { t.Fatal("skipped backwards") })
}

func TestPopUnsent(t *testing.T) {
	s := NewSender[int](1)
	now := time.Now()
	for i := range 4 {
		s.Push(i, 100)
	}
	s.OnSent(s.NextToSend(100), now)
	s.OnSent(s.NextToSend(100), now)
	// 1, 2 sent; 3, 4 never: only those go, newest first.
	for _, want := range []uint64{4, 3} {
		if e := s.PopUnsent(); e == nil || e.Seq != want {
			t.Fatalf("PopUnsent = %+v, want seq %d", e, want)
		}
	}
	if e := s.PopUnsent(); e != nil {
		t.Fatalf("PopUnsent took sent entry %d", e.Seq)
	}
	if s.Next() != 3 || s.HasPending() {
		t.Fatalf("next %d, pending %v", s.Next(), s.HasPending())
	}
	// The next push reuses the sequence number.
	if seq := s.Push(9, 100); seq != 3 {
		t.Fatalf("push after PopUnsent: seq %d", seq)
	}
	var res AckResult[int]
	s.OnAck(now, 3, nil, 2, time.Second, &res)
	if s.Base() != 3 || len(res.Acked) != 2 || s.BytesInFlight() != 0 {
		t.Fatalf("base %d, acked %d, in flight %d", s.Base(), len(res.Acked), s.BytesInFlight())
	}
}
