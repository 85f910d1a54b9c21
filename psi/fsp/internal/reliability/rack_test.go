package reliability

import (
	"testing"
	"time"
)

// TestDetectLossBy: entries sent before the cut-off are offered to the
// rule, in flight ones only; the rule's verdicts and times are kept.
func TestDetectLossBy(t *testing.T) {
	s := NewSender[int](1)
	t0 := time.Now()
	for i := range 4 {
		s.Push(i, 100)
		s.OnSent(s.NextToSend(100), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if got := s.OldestSent(); got == nil || got.Seq != 1 {
		t.Fatalf("oldest %v", got)
	}
	var res AckResult[int]
	var offered []uint64
	// Entries sent before t0+2ms (seq 1 and 2): 1 is lost, 2 is asked
	// about again later.
	next := s.DetectLossBy(t0.Add(5*time.Millisecond), t0.Add(2*time.Millisecond), func(e *Entry[int]) (bool, time.Time) {
		offered = append(offered, e.Seq)
		if e.Seq == 1 {
			return true, time.Time{}
		}
		return false, t0.Add(9 * time.Millisecond)
	}, &res)
	if len(offered) != 2 || offered[0] != 1 || offered[1] != 2 {
		t.Fatalf("offered %v", offered)
	}
	if len(res.Lost) != 1 || res.Lost[0].Seq != 1 || res.LostBytes != 100 || s.BytesInFlight() != 300 {
		t.Fatalf("lost %d (%d bytes), in flight %d", len(res.Lost), res.LostBytes, s.BytesInFlight())
	}
	if !next.Equal(t0.Add(9 * time.Millisecond)) {
		t.Fatalf("next %v", next.Sub(t0))
	}
	if got := s.OldestSent(); got == nil || got.Seq != 2 {
		t.Fatalf("oldest after the loss %v", got)
	}
	// The lost entry is not offered again: it is not in flight.
	offered = offered[:0]
	s.DetectLossBy(t0.Add(5*time.Millisecond), t0.Add(2*time.Millisecond), func(e *Entry[int]) (bool, time.Time) {
		offered = append(offered, e.Seq)
		return false, time.Time{}
	}, &res)
	if len(offered) != 1 || offered[0] != 2 {
		t.Fatalf("offered again %v", offered)
	}
}
