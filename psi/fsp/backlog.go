package fsp

import "github.com/postsockets/postsockets/psi/fsp/internal/sockio"

// ReadBacklog (psi.BacklogReporter) reports whether data from the peer
// waits on our side: ready, packets in order for ReadMessage, or
// datagrams not yet processed (in c's loop's queue, or unread in its
// Transport's socket, for any of its connections); held, packets held
// beyond a loss until its repair arrives, or datagrams the socket
// dropped for want of room since the last call (our reader fell behind;
// the peer resends them).
func (c *Conn) ReadBacklog() (ready, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ready = c.readLen() > 0 || c.inputWaiting()
	held = c.rcv != nil && c.rcv.Buffered() > 0
	if c.t != nil && c.t.udp != nil {
		if d := sockio.Drops(c.t.udp); d != c.backlogDrops {
			c.backlogDrops, held = d, true
		}
	}
	return ready, held
}
