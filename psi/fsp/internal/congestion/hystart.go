package congestion

import "time"

// HyStart++ constants (RFC 9406 section 4.3).
const (
	hystartMinRTTThresh  = 4 * time.Millisecond
	hystartMaxRTTThresh  = 16 * time.Millisecond
	hystartMinRTTDivisor = 8
	hystartNRTTSample    = 8
	hystartCSSGrowthDiv  = 4
	hystartCSSRounds     = 5
	hystartNoRTT         = time.Duration(1<<63 - 1) // RFC 9406's infinity
)

// hystart is HyStart++ (RFC 9406): slow start that ends when the round
// trip rises, before the queue it builds overflows. Every round trip it
// takes the least RTT sample of the round's first hystartNRTTSample
// (after as many, its minimum is what the round shows); once that is
// above the last round's minimum by an eighth of it (4 to 16 ms), the
// queue is growing and Conservative Slow Start (CSS) begins: the window
// grows by a quarter of what slow start would add. If within
// hystartCSSRounds rounds the RTT falls below the minimum that began CSS,
// the rise was jitter and slow start resumes; otherwise congestion
// avoidance begins at the window reached. A loss ends either, as it ends
// slow start.
//
// It runs only in the first slow start, with ssthresh still unset (RFC
// 9406 section 4.2): later ones have the threshold a loss set.
//
// Rounds are the window's (window.onAck): a round ends when a packet sent
// after it began is acknowledged. Samples are counted once per
// acknowledgement, not per packet it covers (RTTStats.Samples).
type hystart struct {
	roundMin, lastRoundMin time.Duration // hystartNoRTT when none
	samples                int           // in this round
	css                    bool
	cssRounds              int
	cssBaseline            time.Duration
	seen                   uint32 // RTTStats.Samples already taken
	started                bool
}

func (h *hystart) init() {
	if !h.started {
		h.started = true
		h.roundMin, h.lastRoundMin, h.cssBaseline = hystartNoRTT, hystartNoRTT, hystartNoRTT
	}
}

// newRound starts a round trip. It reports whether CSS has lasted
// hystartCSSRounds rounds, so that congestion avoidance begins.
func (h *hystart) newRound() bool {
	h.init()
	h.lastRoundMin, h.roundMin, h.samples = h.roundMin, hystartNoRTT, 0
	if !h.css {
		return false
	}
	h.cssRounds++
	return h.cssRounds >= hystartCSSRounds
}

// sample takes rtt's latest sample if it is new, and moves between slow
// start and CSS.
func (h *hystart) sample(rtt *RTTStats) {
	if rtt == nil || rtt.Samples() == h.seen {
		return
	}
	h.init()
	h.seen = rtt.Samples()
	h.roundMin = min(h.roundMin, rtt.LatestRTT())
	h.samples++
	if h.samples < hystartNRTTSample || h.roundMin == hystartNoRTT {
		return
	}
	switch {
	case !h.css && h.lastRoundMin != hystartNoRTT:
		thresh := min(max(h.lastRoundMin/hystartMinRTTDivisor, hystartMinRTTThresh), hystartMaxRTTThresh)
		if h.roundMin >= h.lastRoundMin+thresh {
			h.css, h.cssRounds, h.cssBaseline = true, 0, h.roundMin
		}
	case h.css && h.roundMin < h.cssBaseline:
		h.css, h.cssBaseline = false, hystartNoRTT // the rise was spurious
	}
}

// growth returns what an acknowledgement of acked bytes adds to the
// window in slow start: all of it, or a quarter in CSS.
func (h *hystart) growth(acked int) float64 {
	if h.css {
		return float64(acked) / hystartCSSGrowthDiv
	}
	return float64(acked)
}

// end leaves CSS for good: a loss or the CSS rounds ended slow start.
func (h *hystart) end() { h.css, h.cssRounds = false, 0 }
