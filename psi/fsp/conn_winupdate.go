package fsp

import "time"

// A window update, the acknowledgement that tells a sender blocked by
// our window that the reader made room, is a single packet, and nothing
// acknowledges an acknowledgement: lost, the sender learned of the room
// only from its next window probe, which backs off to maxWindowProbe.
// So the receiver repeats the update, as QUIC retransmits a lost
// MAX_STREAM_DATA, until data beyond the limit the sender was blocked at
// arrives, backing off from the RTO to maxWindowProbe, at most
// winUpdateTries times (a sender with nothing more to send never
// answers with data).
const winUpdateTries = 8

// noteWindowOpened arms the repeats of a window update about to be sent,
// if the peer had filled the window it knew of: everything below it
// arrived, so the peer waits for this update. Called with c.mu held,
// before the update's header moves c.advLimit.
func (c *Conn) noteWindowOpened(now time.Time) {
	if c.milk || c.rcv.Expected() < c.advLimit {
		return
	}
	c.winFrom, c.winTries = c.advLimit, 0
	c.winAt = now.Add(c.winUpdateInterval())
}

// onWindowData ends the repeats once data at or beyond the limit the
// peer was blocked at arrives: it has the update. Called with c.mu held.
func (c *Conn) onWindowData(seq uint64) {
	if !c.winAt.IsZero() && seq >= c.winFrom {
		c.winAt = time.Time{}
	}
}

// onWindowTimer repeats a window update the peer has not acted on.
// Called with c.mu held from the timer.
func (c *Conn) onWindowTimer(now time.Time) {
	if c.winAt.IsZero() || now.Before(c.winAt) {
		return
	}
	if c.winTries >= winUpdateTries || c.peerReleased || c.rcv.Largest() >= c.winFrom {
		c.winAt = time.Time{}
		return
	}
	c.winTries++
	c.stats.WindowUpdates++
	c.ackNow = true // every header carries the window
	c.winAt = now.Add(c.winUpdateInterval())
}

// winUpdateInterval is the wait before the next repeat: the RTO (at
// least minProbeInterval) doubled per repeat, up to maxWindowProbe.
func (c *Conn) winUpdateInterval() time.Duration {
	return min(max(c.rtt.RTO(), minProbeInterval)<<min(c.winTries, 16), maxWindowProbe)
}
