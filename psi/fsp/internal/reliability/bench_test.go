package reliability

import (
	"fmt"
	"testing"
	"time"
)

// benchWindow is 4 MiB of 1,400-byte packets.
const benchWindow = 4 << 20 / 1400

// holesFor spaces holes evenly across the window, the first at the start.
func holesFor(n int) map[uint64]bool {
	h := make(map[uint64]bool, n)
	for i := range n {
		h[uint64(1+i*benchWindow/n)] = true
	}
	return h
}

// BenchmarkGaps measures building the SNACK gap list once per
// acknowledgement with a full 4 MiB window and 1 or many holes.
func BenchmarkGaps(b *testing.B) {
	for _, holes := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("holes=%d", holes), func(b *testing.B) {
			r := NewReceiver[int](1)
			h := holesFor(holes)
			for seq := uint64(1); seq <= benchWindow; seq++ {
				if !h[seq] {
					r.Insert(seq, 0, benchWindow+1)
				}
			}
			dst := make([]Gap, 0, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				dst = r.Gaps(dst[:0], 64)
			}
		})
	}
}

// BenchmarkOnAck measures processing one SNACK with a full 4 MiB window in
// flight and 1 or many holes: the same gap list arrives again, as it does
// for every packet received while a hole stays open.
func BenchmarkOnAck(b *testing.B) {
	for _, holes := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("holes=%d", holes), func(b *testing.B) {
			s := NewSender[int](1)
			now := time.Unix(0, 0)
			for i := range benchWindow {
				s.OnSent(s.Get(s.Push(i, 1400)), now)
			}
			r := NewReceiver[int](1)
			h := holesFor(holes)
			for seq := uint64(1); seq < benchWindow; seq++ {
				if !h[seq] {
					r.Insert(seq, 0, benchWindow+1)
				}
			}
			gaps := r.Gaps(nil, 64)
			var res AckResult[int]
			s.OnAck(now, 1, gaps, 0, time.Hour, &res)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				s.OnAck(now, 1, gaps, 0, time.Hour, &res)
			}
		})
	}
}

// BenchmarkRoundTrip sends and acknowledges a window of 64 packets in
// order, over and over: the steady state of a clean bulk transfer.
func BenchmarkRoundTrip(b *testing.B) {
	s := NewSender[int](1)
	r := NewReceiver[int](1)
	now := time.Unix(0, 0)
	var res AckResult[int]
	b.ReportAllocs()
	for range b.N {
		for i := range 64 {
			seq := s.Push(i, 1400)
			s.OnSent(s.NextToSend(seq+1), now)
			r.Insert(seq, i, seq+1)
			r.Pop()
		}
		s.OnAck(now, r.Expected(), nil, 0, time.Hour, &res)
	}
}
