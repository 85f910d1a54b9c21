package congestion

import (
	"math"
	"time"
)

// CUBIC constants from RFC 9438.
const (
	cubicC     = 0.4 // segments per second cubed
	cubicBeta  = 0.7
	cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta) // Reno-friendly increase
)

// cubic is CUBIC congestion control (RFC 9438) with the Reno-friendly
// region and fast convergence. The first slow start is HyStart++'s
// (hystart).
type cubic struct {
	window
	cwndF      float64   // the window with fractional bytes; cwnd mirrors it
	wMax       float64   // window before the last reduction, after fast convergence
	cwndPrior  float64   // window before the last reduction
	origin     float64   // plateau of the current curve, in bytes
	k          float64   // seconds from epochStart to the plateau
	epochStart time.Time // zero when no congestion avoidance epoch is open
	wEst       float64   // Reno-friendly window estimate
	// before the first of a run of timeouts: cwndF, ssthresh, wMax and
	// cwndPrior
	undo [4]float64
}

// NewCubic returns a CUBIC controller (RFC 9438): window growth follows
// W(t) = C(t-K)^3 + Wmax with C = 0.4, reductions multiply the window by
// 0.7 (0.85 for a loss with the queue empty: see randomLossBacklog), fast
// convergence lowers Wmax when the window shrinks between events, and the
// window never grows slower than Reno's would.
func NewCubic(cfg Config) Controller {
	c := &cubic{window: newWindow(cfg)}
	c.cwndF = float64(c.cwnd)
	return c
}

func (c *cubic) set(w float64) {
	w = min(max(w, float64(c.minWindow)), float64(c.maxWindow))
	c.cwndF = w
	c.cwnd = int(w)
}

// wCubic returns the curve's window in bytes t seconds into the epoch.
func (c *cubic) wCubic(t float64) float64 {
	d := t - c.k
	return cubicC*d*d*d*float64(c.mss) + c.origin
}

func (c *cubic) OnAck(now time.Time, pn uint64, ackedBytes int, priorInFlight int, rtt *RTTStats) {
	c.noteRTT(rtt)
	if !c.onAck(pn, ackedBytes, priorInFlight, rtt) {
		if !c.inRecovery && ackedBytes > 0 {
			// Application limited: restart the epoch when growth resumes,
			// so idle time does not count towards the curve.
			c.epochStart = time.Time{}
		}
		return
	}
	if c.inSlowStart() {
		c.set(c.cwndF + c.slowStartGrowth(ackedBytes))
		return
	}
	mss := float64(c.mss)
	if c.epochStart.IsZero() {
		c.epochStart = now
		if c.cwndF < c.wMax {
			c.k = math.Cbrt((c.wMax - c.cwndF) / mss / cubicC)
			c.origin = c.wMax
		} else {
			c.k = 0
			c.origin = c.cwndF
		}
		c.wEst = c.cwndF
	}
	srtt := InitialRTT
	if rtt != nil {
		srtt = rtt.SmoothedRTT()
	}
	t := max(now.Sub(c.epochStart), 0).Seconds()
	target := min(max(c.wCubic(t+srtt.Seconds()), c.cwndF), 1.5*c.cwndF)

	alpha := cubicAlpha
	if c.wEst >= c.cwndPrior {
		alpha = 1
	}
	c.wEst += alpha * float64(ackedBytes) / c.cwndF * mss

	if c.wCubic(t) < c.wEst {
		c.set(max(c.cwndF, c.wEst)) // Reno-friendly region
		return
	}
	c.set(c.cwndF + (target-c.cwndF)/c.cwndF*float64(ackedBytes))
}

// reduce records a congestion event: Wmax with fast convergence and the
// new slow start threshold, the window in use (window.used) times beta.
func (c *cubic) reduce(priorInFlight int, beta float64) {
	w := c.cwndF
	if u := c.used(priorInFlight); u < c.cwnd {
		w = float64(u)
	}
	if w < c.wMax {
		c.wMax = w * (1 + beta) / 2
	} else {
		c.wMax = w
	}
	c.cwndPrior = w
	c.epochStart = time.Time{}
	c.ssthresh = max(int(w*beta), c.minWindow)
}

func (c *cubic) OnLoss(_ time.Time, pn uint64, lostBytes int, priorInFlight int) {
	if !c.beginEpoch(pn, lostBytes) {
		return
	}
	beta := cubicBeta
	if c.queueEmpty() {
		beta = randomLossBeta
	}
	c.reduce(priorInFlight, beta)
	c.set(float64(c.ssthresh))
}

func (c *cubic) OnRetransmissionTimeout() {
	if c.timeout() {
		c.undo = [4]float64{c.cwndF, float64(c.ssthresh), c.wMax, c.cwndPrior}
		c.undoable = true
		c.reduce(0, cubicBeta)
	}
	c.epochStart = time.Time{}
	c.set(float64(c.minWindow))
}

func (c *cubic) UndoTimeout() bool {
	if !c.undoable {
		return false
	}
	c.set(c.undo[0])
	c.ssthresh, c.wMax, c.cwndPrior = int(c.undo[1]), c.undo[2], c.undo[3]
	c.epochStart = time.Time{}
	c.undone()
	return true
}
