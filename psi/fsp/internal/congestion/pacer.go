package congestion

import (
	"math"
	"time"
)

// PacerBurstPackets is how many packets a Pacer lets out back to back.
const PacerBurstPackets = 10

// Pacer spreads packets over time with a token bucket: tokens accrue at the
// pacing rate up to a burst of PacerBurstPackets packets, and a packet may
// leave when the bucket holds its size. Feed it Controller.PacingRate after
// every acknowledgement. A Pacer with no rate set does not delay packets.
type Pacer struct {
	burst  float64 // bucket size, bytes
	tokens float64
	rate   float64 // bytes per second; 0 means unpaced
	last   time.Time
}

// NewPacer returns a Pacer for packets of up to mss bytes, with a full
// bucket and no rate.
func NewPacer(mss int) *Pacer {
	if mss <= 0 {
		mss = DefaultMSS
	}
	b := float64(PacerBurstPackets * mss)
	return &Pacer{burst: b, tokens: b}
}

// SetRate sets the pacing rate in bytes per second. Zero, negative or
// non-finite rates turn pacing off.
func (p *Pacer) SetRate(bytesPerSecond float64) {
	if !(bytesPerSecond > 0) || math.IsInf(bytesPerSecond, 1) {
		bytesPerSecond = 0
	}
	p.rate = bytesPerSecond
}

// Rate returns the pacing rate in bytes per second, zero if unpaced.
func (p *Pacer) Rate() float64 { return p.rate }

func (p *Pacer) refill(now time.Time) {
	if !p.last.IsZero() && now.After(p.last) && p.rate > 0 {
		p.tokens = min(p.tokens+now.Sub(p.last).Seconds()*p.rate, p.burst)
	}
	if p.last.IsZero() || now.After(p.last) {
		p.last = now
	}
}

// TimeUntilSend returns how long to wait before a packet of the given size
// may be sent, or 0 if it may be sent now.
func (p *Pacer) TimeUntilSend(now time.Time, bytes int) time.Duration {
	if p.rate == 0 {
		return 0
	}
	p.refill(now)
	need := min(float64(bytes), p.burst) - p.tokens
	if need <= 0 {
		return 0
	}
	return max(time.Duration(math.Ceil(need/p.rate*1e9)), 1)
}

// OnSent takes the packet's bytes from the bucket. The bucket may go into
// debt if the caller sent without waiting; later packets then wait longer.
func (p *Pacer) OnSent(now time.Time, bytes int) {
	p.refill(now)
	if p.rate == 0 {
		return
	}
	p.tokens = max(p.tokens-float64(bytes), -p.burst)
}
