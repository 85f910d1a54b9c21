package reliability

import (
	"slices"
	"testing"
	"time"
)

// FuzzRangeSet checks the span set against a plain set of numbers: the
// same members, sorted disjoint non-adjacent spans, and Add reporting
// exactly the numbers it newly covered.
func FuzzRangeSet(f *testing.F) {
	f.Add([]byte{0, 3, 2, 0, 9, 1, 1, 0, 5, 4, 2, 6})
	f.Add([]byte{0, 1, 1, 0, 3, 1, 0, 2, 1, 1, 2, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var r rangeSet
		ref := map[uint64]bool{}
		floor := uint64(0)
		hint, prevHi := 0, uint64(0) // for ascending adds, as OnAck makes them
		for len(ops) >= 3 {
			op, a, b := ops[0], uint64(ops[1]), uint64(ops[2]%16)
			ops = ops[3:]
			if op%4 == 3 {
				floor = max(floor, a)
				r.RemoveBelow(a)
				hint, prevHi = 0, 0
				for k := range ref {
					if k < a {
						delete(ref, k)
					}
				}
			} else {
				var got []uint64
				visit := func(lo, hi uint64) {
					if lo >= hi {
						t.Fatalf("empty callback span [%d,%d)", lo, hi)
					}
					for q := lo; q < hi; q++ {
						got = append(got, q)
					}
				}
				if op%4 == 2 && a >= prevHi {
					hint = r.add(hint, a, a+b, visit)
				} else {
					r.Add(a, a+b, visit)
					hint = 0
				}
				prevHi = a + b
				var want []uint64
				for q := a; q < a+b; q++ {
					if !ref[q] {
						want = append(want, q)
						ref[q] = true
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("Add(%d,%d) reported %v, want %v", a, a+b, got, want)
				}
			}
			n := 0
			for i, sp := range r.s {
				if sp.lo >= sp.hi || i > 0 && r.s[i-1].hi >= sp.lo {
					t.Fatalf("spans not sorted, disjoint and apart: %v", r.s)
				}
				n += int(sp.hi - sp.lo)
			}
			if n != len(ref) {
				t.Fatalf("%d members, want %d", n, len(ref))
			}
			for q := range uint64(300) {
				if r.Contains(q) != ref[q] {
					t.Fatalf("Contains(%d) = %v", q, !ref[q])
				}
			}
		}
	})
}

// refGaps is the gap list computed seq by seq from a set of received
// sequence numbers, as the receiver did before it kept spans.
func refGaps(got map[uint64]bool, expected, largest uint64, max int) []Gap {
	var dst []Gap
	seq := expected
	for len(dst) < max && seq <= largest {
		var g Gap
		for ; seq <= largest && !got[seq]; seq++ {
			g.Gap++
		}
		for ; seq <= largest && got[seq]; seq++ {
			g.Data++
		}
		if g.Data == 0 {
			break
		}
		dst = append(dst, g)
	}
	return dst
}

// FuzzReceiverGaps checks the receiver against a reference model: the
// same acceptance, the same in-order output and the same gap list, and
// feeds each gap list to a sender to check it acknowledges exactly the
// received packets.
func FuzzReceiverGaps(f *testing.F) {
	f.Add([]byte{3, 4, 7, 9, 1, 2, 200, 5, 6, 8})
	f.Add([]byte{10, 0, 20, 1, 2, 3, 255, 30, 4, 5})
	f.Fuzz(func(t *testing.T, in []byte) {
		const window = 64
		r := NewReceiver[uint64](1)
		s := NewSender[uint64](1)
		now := time.Unix(0, 0)
		got := map[uint64]bool{}
		expected := uint64(1)
		for _, b := range in {
			if b >= 200 { // skip ahead
				to := expected + uint64(b-200)
				r.SkipTo(to, func(uint64) {})
				for k := range got {
					if k < to {
						delete(got, k)
					}
				}
				expected = max(expected, to)
			} else {
				seq := expected + uint64(b%window)
				accepted := r.Insert(seq, seq, expected+window)
				if accepted == got[seq] {
					t.Fatalf("Insert(%d) = %v, held before: %v", seq, accepted, got[seq])
				}
				got[seq] = true
				for v, ok := r.Pop(); ok; v, ok = r.Pop() {
					if v != expected || !got[v] {
						t.Fatalf("popped %d, expected %d", v, expected)
					}
					delete(got, v)
					expected++
				}
			}
			if r.Expected() != expected || r.Buffered() != len(got) {
				t.Fatalf("expected %d/%d, buffered %d/%d", r.Expected(), expected, r.Buffered(), len(got))
			}
			gaps := r.Gaps(nil, 8)
			want := refGaps(got, expected, r.Largest(), 8)
			if len(got) == 0 {
				want = nil
			}
			if !slices.Equal(gaps, want) {
				t.Fatalf("gaps %v, want %v (expected %d, held %v)", gaps, want, expected, got)
			}
			// The sender acknowledges what the gap list says arrived.
			for s.Next() < expected+window {
				s.OnSent(s.Get(s.Push(0, 1)), now)
			}
			var res AckResult[uint64]
			s.OnAck(now, expected, gaps, 0, time.Hour, &res)
			if s.Base() != expected {
				t.Fatalf("sender base %d, want %d", s.Base(), expected)
			}
			seq := expected
			for _, g := range gaps {
				seq += g.Gap
				for range g.Data {
					if e := s.Get(seq); e == nil || !e.Acked {
						t.Fatalf("seq %d reported received but not acknowledged", seq)
					}
					seq++
				}
			}
			for e := range s.unacked() {
				if e.Acked {
					t.Fatalf("unacked yields acknowledged %d", e.Seq)
				}
			}
		}
	})
}

func TestRingWrap(t *testing.T) {
	var q ring[int]
	next, want := 0, 0
	for round := range 200 {
		for range round % 7 {
			q.PushBack(next)
			next++
		}
		for range round % 5 {
			if q.Len() == 0 {
				break
			}
			if v := q.PopFront(); v != want {
				t.Fatalf("popped %d, want %d", v, want)
			}
			want++
		}
		for i := range q.Len() {
			if q.At(i) != want+i {
				t.Fatalf("At(%d) = %d, want %d", i, q.At(i), want+i)
			}
		}
	}
}
