package fsp

import "time"

// Quiet probes: a receiver whose peer was sending data and then fell
// silent asks for an acknowledgement, at growing intervals, until it
// hears anything. A receiver that lost its local address (the route
// moved to another interface) hears nothing more, since the peer sends
// to the old address; its probe leaves by the new route and lets the
// peer validate and follow the new path long before the peer gives up
// on an unacknowledged window, where the keep-alive interval (a third of
// the idle timeout) would come too late.
const (
	quietAfter     = 250 * time.Millisecond
	maxQuietProbes = 5 // 250 ms … 4 s after the last data
)

// onDataHeard rearms the quiet probes on new data (onData): not on a
// duplicate, which our lost acknowledgement made the peer resend, nor on
// the peer's RELEASE, after which it owes nothing. Rearmed by those, the
// probes asked for acknowledgements by the thousand from TestManyDials'
// clients under load (docs/benchmarks.md). Called with c.mu held.
func (c *Conn) onDataHeard(now time.Time) {
	c.quietProbes = 0
	c.quietAt = now.Add(quietAfter)
}

// onQuietTimer sends a quiet probe if it is due and nothing was heard
// since the last data. Called with c.mu held, from onTimer.
func (c *Conn) onQuietTimer(now time.Time) {
	if c.quietAt.IsZero() || now.Before(c.quietAt) {
		return
	}
	if now.Sub(c.lastRecv) < quietAfter<<c.quietProbes || c.peerDone() {
		// The peer is heard, so the path works; or it released the
		// connection and owes nothing, so its silence says nothing.
		c.quietAt = time.Time{}
		return
	}
	c.ackReq = true
	c.quietProbes++
	if c.quietProbes >= maxQuietProbes {
		c.quietAt = time.Time{}
		return
	}
	c.quietAt = now.Add(quietAfter << c.quietProbes)
}
