package congestion

import (
	"testing"
	"time"
)

func benchmarkAck(b *testing.B, mk func(Config) Controller) {
	c := mk(Config{InitialWindowPackets: 1000})
	c.OnPacketSent(time.Time{}, 0, mss, c.Window())
	c.OnLoss(time.Time{}, 0, mss, c.Window()) // congestion avoidance, the costly path
	var rtt RTTStats
	now := time.Unix(0, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now = now.Add(10 * time.Microsecond)
		pn := uint64(i + 1)
		c.OnPacketSent(now, pn, mss, c.Window())
		rtt.Update(20*time.Millisecond, 0)
		c.OnAck(now, pn, mss, c.Window(), &rtt)
		if c.Window() >= DefaultMaxWindow {
			b.StopTimer()
			c = mk(Config{InitialWindowPackets: 1000})
			c.OnLoss(now, pn, mss, c.Window())
			b.StartTimer()
		}
	}
}

func BenchmarkAckNewReno(b *testing.B) { benchmarkAck(b, NewReno) }
func BenchmarkAckCubic(b *testing.B)   { benchmarkAck(b, NewCubic) }

func BenchmarkPacer(b *testing.B) {
	p := NewPacer(mss)
	p.SetRate(1e9)
	now := time.Unix(0, 0)
	b.ReportAllocs()
	for range b.N {
		if d := p.TimeUntilSend(now, mss); d > 0 {
			now = now.Add(d)
		}
		p.OnSent(now, mss)
	}
}
