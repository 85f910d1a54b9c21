package congestion_test

import (
	"fmt"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
)

// This shows how a sender wires RTTStats, a Controller and a Pacer
// together, with a simulated clock and a path of 40 ms round trip.
func Example() {
	var rtt congestion.RTTStats
	cc, _ := congestion.New("cubic", congestion.Config{})
	pacer := congestion.NewPacer(congestion.DefaultMSS)
	now := time.Unix(0, 0)

	var pn uint64
	inFlight := 0
	for round := 0; round < 3; round++ {
		// Send while the window and the pacer allow.
		first := pn
		for cc.CanSend(inFlight) {
			if d := pacer.TimeUntilSend(now, congestion.DefaultMSS); d > 0 {
				now = now.Add(d) // a real sender sets a timer
			}
			inFlight += congestion.DefaultMSS
			cc.OnPacketSent(now, pn, congestion.DefaultMSS, inFlight)
			pacer.OnSent(now, congestion.DefaultMSS)
			pn++
		}
		// One acknowledgement covering the flight comes back a round trip
		// later; every packet it acknowledges sees the same prior flight.
		now = now.Add(40 * time.Millisecond)
		rtt.Update(40*time.Millisecond, 0)
		prior := inFlight
		for p := first; p < pn; p++ {
			cc.OnAck(now, p, congestion.DefaultMSS, prior, &rtt)
			inFlight -= congestion.DefaultMSS
			pacer.SetRate(cc.PacingRate(&rtt))
		}
		fmt.Printf("round %d: window %d packets, RTO %v\n", round, cc.Window()/congestion.DefaultMSS, rtt.RTO())
	}
	// Output:
	// round 0: window 64 packets, RTO 200ms
	// round 1: window 128 packets, RTO 200ms
	// round 2: window 256 packets, RTO 200ms
}
