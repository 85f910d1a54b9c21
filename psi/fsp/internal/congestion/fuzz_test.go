package congestion

import (
	"math"
	"testing"
	"time"
)

// FuzzController drives both controllers with arbitrary event sequences
// and checks the window stays within bounds and the pacing rate is sane.
func FuzzController(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 1, 2, 3, 0, 1})
	f.Add([]byte{0, 0, 0, 0, 2, 2, 1, 1, 1, 1, 3, 3, 0, 1, 1})
	f.Add([]byte{3, 3, 3, 1, 0, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		for name, mk := range controllers() {
			cfg := Config{MSS: 1200, InitialWindowPackets: 4, MaxWindow: 1 << 20}
			c := mk(cfg)
			var rtt RTTStats
			now := time.Unix(0, 0)
			var next, acked uint64
			inFlight := 0
			for i, op := range ops {
				now = now.Add(time.Duration(op) * time.Millisecond)
				switch op % 4 {
				case 0:
					if c.CanSend(inFlight) {
						inFlight += 1200
						c.OnPacketSent(now, next, 1200, inFlight)
						next++
					}
				case 1:
					if acked < next {
						rtt.Update(time.Duration(op+1)*time.Millisecond, time.Duration(op%7)*time.Millisecond)
						c.OnAck(now, acked, 1200, inFlight, &rtt)
						acked++
						inFlight -= 1200
					}
				case 2:
					if acked < next {
						c.OnLoss(now, acked, 1200, inFlight)
						acked++
						inFlight -= 1200
					}
				case 3:
					c.OnRetransmissionTimeout()
					rtt.Backoff()
				}
				if w := c.Window(); w < MinWindowPackets*1200 || w > cfg.MaxWindow {
					t.Fatalf("%s: op %d: window %d out of bounds", name, i, w)
				}
				if r := c.PacingRate(&rtt); !(r > 0) || math.IsInf(r, 0) {
					t.Fatalf("%s: op %d: pacing rate %v", name, i, r)
				}
				if rto := rtt.RTO(); rto < MinRTO || rto > MaxRTO {
					t.Fatalf("op %d: RTO %v out of bounds", i, rto)
				}
			}
		}
	})
}
