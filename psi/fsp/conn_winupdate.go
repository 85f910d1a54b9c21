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

// winRepeat is the state of a window update's repeats, apart from Conn
// so that a connection whose window never fills (every pending
// handshake) does not carry it.
type winRepeat struct {
	from  uint64    // the limit the peer was blocked at when the window opened
	at    time.Time // the next repeat; zero: none
	tries uint      // repeats sent
}

// noteWindowOpened arms the repeats of a window update about to be sent,
// if the peer had filled the window it knew of: everything below it
// arrived, so the peer waits for this update. Called with c.mu held,
// before the update's header moves c.advLimit.
func (c *Conn) noteWindowOpened(now time.Time) {
	if c.milk || c.rcv.Expected() < c.advLimit {
		return
	}
	if c.win == nil {
		c.win = new(winRepeat)
	}
	c.win.from, c.win.tries = c.advLimit, 0
	c.win.at = now.Add(c.winUpdateInterval())
}

// onWindowData ends the repeats once data at or beyond the limit the
// peer was blocked at arrives: it has the update. Called with c.mu held.
func (c *Conn) onWindowData(seq uint64) {
	if w := c.win; w != nil && !w.at.IsZero() && seq >= w.from {
		w.at = time.Time{}
	}
}

// onWindowTimer repeats a window update the peer has not acted on.
// Called with c.mu held from the timer.
func (c *Conn) onWindowTimer(now time.Time) {
	w := c.win
	if w == nil || w.at.IsZero() || now.Before(w.at) {
		return
	}
	if w.tries >= winUpdateTries || c.peerReleased || c.rcv.Largest() >= w.from {
		w.at = time.Time{}
		return
	}
	w.tries++
	c.stats.WindowUpdates++
	c.ackNow = true // every header carries the window
	w.at = now.Add(c.winUpdateInterval())
}

// winUpdateInterval is the wait before the next repeat: the RTO (at
// least minProbeInterval) doubled per repeat, up to maxWindowProbe.
func (c *Conn) winUpdateInterval() time.Duration {
	return min(max(c.rtt.RTO(), minProbeInterval)<<min(c.win.tries, 16), maxWindowProbe)
}
