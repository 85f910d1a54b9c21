package fsp

import (
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
)

// Memory after a burst. The send window, the receive window, the read
// queue and the loop's queue (conn_loop.go) keep their capacity while
// traffic flows, so a steady transfer
// allocates nothing; once one of them has held far more room than it
// uses for compactIdle, the timer shrinks it back (reliability's Compact),
// and an idle connection holds only what an idle connection needs. So
// does the room a listener's memory budget holds for received packets
// (budget.go): it goes back to the base window.

// compactIdle is how long a buffer stays oversized before it shrinks.
const compactIdle = time.Second

// scheduleCompact arms the compaction deadline if some buffer is
// oversized and none is armed. c.mu is held.
func (c *Conn) scheduleCompact() {
	if c.compactAt.IsZero() && c.oversized() {
		c.compactAt = time.Now().Add(compactIdle)
	}
}

func (c *Conn) oversized() bool {
	return c.snd != nil && c.snd.Oversized() ||
		c.rcv != nil && c.rcv.Oversized() ||
		cap(c.readQ) > 4*max(16, c.readLen()) ||
		c.inq.oversized() ||
		c.overHeld() ||
		len(c.rxSpare) > 0
}

// compact shrinks whatever is still oversized at compactAt. c.mu is held.
func (c *Conn) compact() {
	c.compactAt = time.Time{}
	if c.snd != nil {
		c.ackRes = reliability.AckResult[txData]{} // its entries are recycled
		c.snd.Compact()
	}
	if c.rcv != nil {
		c.rcv.Compact()
	}
	c.putRxSpare()
	if n := c.readLen(); cap(c.readQ) > 4*max(16, n) {
		var q []rxData
		if n > 0 {
			q = append(make([]rxData, 0, 2*n), c.readQ[c.readHead:]...)
		}
		c.readQ, c.readHead = q, 0
	}
	c.inq.shrink()
	c.release()
}
