// Package congestion implements the congestion control of the FSP stack:
// round-trip time estimation (RTTStats), the NewReno and CUBIC window
// controllers behind the Controller interface, whose first slow start is
// HyStart++ (RFC 9406: it ends when the round trip rises, before a queue
// overflows), and a token-bucket Pacer.
//
// The package is pure logic: it performs no I/O and reads no clock. Every
// method that depends on time takes the current time as an argument, so the
// caller (or a test) owns the clock.
//
// Byte counts are in bytes of UDP payload, packet numbers are the sender's
// monotonically increasing packet numbers, and none of the types are safe
// for concurrent use: a connection drives its controller from one goroutine.
package congestion

import "time"

// RTT estimation constants.
const (
	// InitialRTT is the smoothed RTT assumed before the first sample, as in
	// RFC 9002.
	InitialRTT = 100 * time.Millisecond
	// MinRTO is the default floor of the retransmission timeout. RFC 6298
	// asks for one second, which is too slow for modern paths; 200 ms is
	// the floor Linux TCP uses and tolerates delayed acknowledgements.
	// SetMinRTO changes it per estimator. A lone message whose packet is
	// lost waits out this floor when nothing follows it; PTO has none.
	MinRTO = 200 * time.Millisecond
	// MaxRTO caps the retransmission timeout after backoff.
	MaxRTO = 60 * time.Second
	// granularity is the timer granularity of RFC 9002 (kGranularity).
	granularity = time.Millisecond
)

// RTTStats estimates the round-trip time of a path following RFC 6298 and
// RFC 9002 section 5. The zero value is ready to use and assumes InitialRTT
// until the first sample.
type RTTStats struct {
	latest      time.Duration
	smoothed    time.Duration
	rttvar      time.Duration
	min         time.Duration
	maxAckDelay time.Duration
	minRTO      time.Duration // zero means MinRTO
	backoff     uint32
	hasSample   bool
	seeded      bool   // SetInitial gave smoothed and rttvar
	samples     uint32 // valid samples given to Update, wrapping
}

// Update adds an RTT sample: the time from sending a packet to receiving its
// acknowledgement. ackDelay is the time the peer reports it held the
// acknowledgement; it is subtracted unless that would take the sample below
// the minimum RTT, and it is capped by SetMaxAckDelay when one is set.
// Samples that are not positive are ignored. A valid sample resets the
// timeout backoff. Following Karn's algorithm, callers must not take
// samples from retransmitted packets.
func (r *RTTStats) Update(sample, ackDelay time.Duration) {
	if sample <= 0 {
		return
	}
	r.latest = sample
	r.backoff = 0
	r.samples++
	if !r.hasSample {
		r.hasSample = true
		r.min = sample
		r.smoothed = sample
		r.rttvar = sample / 2
		return
	}
	r.min = min(r.min, sample)
	if r.maxAckDelay > 0 {
		ackDelay = min(ackDelay, r.maxAckDelay)
	}
	adjusted := sample
	if ackDelay > 0 && sample-ackDelay >= r.min {
		adjusted = sample - ackDelay
	}
	diff := r.smoothed - adjusted
	if diff < 0 {
		diff = -diff
	}
	r.rttvar = (3*r.rttvar + diff) / 4
	r.smoothed = (7*r.smoothed + adjusted) / 8
}

// SetMaxAckDelay sets the longest time the peer promises to delay an
// acknowledgement. It caps the ackDelay given to Update and is added to the
// RTO, as in the RFC 9002 probe timeout. The default is zero.
func (r *RTTStats) SetMaxAckDelay(d time.Duration) { r.maxAckDelay = max(d, 0) }

// SetMinRTO sets the floor of RTO for this estimator; zero or less
// restores MinRTO, and floors below the timer granularity (1 ms) are raised
// to it. A sender whose acknowledgements are bounded by SetMaxAckDelay
// (which RTO adds) can use a low floor to repair the loss of a lone
// packet quickly, at the price of spurious timeouts when the path's delay
// jumps by more than the variance term.
func (r *RTTStats) SetMinRTO(d time.Duration) {
	if d <= 0 {
		r.minRTO = 0
		return
	}
	r.minRTO = max(d, granularity)
}

// MinRTOFloor returns the floor RTO applies: MinRTO unless SetMinRTO
// changed it.
func (r *RTTStats) MinRTOFloor() time.Duration {
	if r.minRTO > 0 {
		return r.minRTO
	}
	return MinRTO
}

// HasSample reports whether Update has been given a valid sample.
func (r *RTTStats) HasSample() bool { return r.hasSample }

// SetInitial replaces InitialRTT by d until the first sample, which
// then replaces it as it would InitialRTT: an estimate from an earlier
// connection over the same path (RFC 9002 §6.2.2). It does nothing once
// a sample came, or for d not positive.
func (r *RTTStats) SetInitial(d time.Duration) {
	if r.hasSample || d <= 0 {
		return
	}
	r.smoothed, r.rttvar, r.seeded = d, d/2, true
}

// Estimate returns the smoothed RTT and whether it comes from a sample
// or SetInitial rather than InitialRTT.
func (r *RTTStats) Estimate() (time.Duration, bool) {
	return r.SmoothedRTT(), r.hasSample || r.seeded
}

// SmoothedRTT returns the smoothed RTT, or InitialRTT (or SetInitial's)
// before any sample.
func (r *RTTStats) SmoothedRTT() time.Duration {
	if !r.hasSample && !r.seeded {
		return InitialRTT
	}
	return r.smoothed
}

// RTTVar returns the RTT variation, or InitialRTT/2 (or half SetInitial's)
// before any sample.
func (r *RTTStats) RTTVar() time.Duration {
	if !r.hasSample && !r.seeded {
		return InitialRTT / 2
	}
	return r.rttvar
}

// MinRTT returns the smallest sample seen, or zero before any sample.
func (r *RTTStats) MinRTT() time.Duration { return r.min }

// Samples returns how many valid samples Update has been given, modulo
// 2^32: a controller that is handed the estimator once per packet
// acknowledged tells by it whether the latest sample is new.
func (r *RTTStats) Samples() uint32 { return r.samples }

// LatestRTT returns the most recent sample, or zero before any sample.
func (r *RTTStats) LatestRTT() time.Duration { return r.latest }

// RTO returns the retransmission timeout: SmoothedRTT + max(4*RTTVar, 1ms)
// + the max ack delay, at least MinRTOFloor (MinRTO by default), doubled
// for every Backoff since the last sample and capped at MaxRTO. Before any
// sample, without SetInitial, it is 300 ms.
func (r *RTTStats) RTO() time.Duration {
	return r.backedOff(max(r.pto(), r.MinRTOFloor()))
}

// PTO returns the probe timeout of RFC 9002 section 6.2.1: SmoothedRTT +
// max(4*RTTVar, 1ms) + the max ack delay, doubled for every Backoff since
// the last sample and capped at MaxRTO, with no MinRTO floor. It is the
// time after which a sender with unacknowledged data and nothing else to
// send should probe (send one packet, new data or a retransmission)
// rather than wait for the RTO: on a short path it is a few milliseconds
// where the RTO is 200. Unlike an RTO expiry, a probe should not collapse
// the congestion window. Before any sample, without SetInitial, it is
// 300 ms.
func (r *RTTStats) PTO() time.Duration { return r.backedOff(r.pto()) }

func (r *RTTStats) pto() time.Duration {
	return r.SmoothedRTT() + max(4*r.RTTVar(), granularity) + r.maxAckDelay
}

func (r *RTTStats) backedOff(d time.Duration) time.Duration {
	for i := uint32(0); i < r.backoff && d < MaxRTO; i++ {
		d *= 2
	}
	return min(d, MaxRTO)
}

// Backoff doubles the RTO after a retransmission timeout fired (RFC 6298
// section 5.5). The next valid sample given to Update undoes it.
func (r *RTTStats) Backoff() {
	if r.backoff < 32 {
		r.backoff++
	}
}

// Backoffs returns how many times the RTO has been doubled since the last
// sample; a connection may give up after too many.
func (r *RTTStats) Backoffs() int { return int(r.backoff) }
