package fsp

import "github.com/postsockets/postsockets/psi/fsp/internal/wire"

// Jumbo datagrams: those above MaxDatagramSize, which path MTU discovery
// (pmtud.go) finds on loopback and on paths of a 9,000-byte MTU, up to
// Config.MaxPathMTU. A connection takes them only once authenticated
// (a handshake keeps to BaseDatagramSize, and nothing unauthenticated
// gets a reply larger than itself), and only if it can pay for them.
//
// A listener's budget charges each packet a connection buffers by the
// buffer it holds. The room for packets (hold, budget.go) is counted in
// small buffers, rxCost each; a jumbo buffer among them costs jumboExtra
// more, charged when the packet is buffered (holdJumbo) and counted
// until its buffer leaves the connection (freeRx, dropRx). The first
// jumbo datagram charges a base of baseWindow jumbo buffers, held until
// the close, so that such a connection always makes progress, as the
// base window does for small packets; when the budget has no room for
// that base the datagram is dropped, as the network might have: the
// peer's probe of that size is lost, and its search stops below. Past
// the base, a jumbo packet without room is dropped unacknowledged, like
// any packet without room, and the sender retransmits it.

const (
	// rxJumboCost is one received packet in a jumbo buffer, as the
	// budget counts it: the buffer and, as for rxCost, its bookkeeping.
	rxJumboCost = jumboBufSize + 128
	// jumboExtra is what a jumbo buffer costs beyond a small one's room.
	jumboExtra = rxJumboCost - rxCost
	// jumboChunk is the jumbo buffers a connection's charge for them
	// grows by at least, as holdChunk for packets.
	jumboChunk = 4
)

// maxDatagram is the largest datagram c takes from its peer: its search's
// ceiling.
func (c *Conn) maxDatagram() int { return max(c.rxMax, MaxDatagramSize) }

// tooLong reports whether an established connection's protected packet
// pkt, in a datagram of n bytes, is longer than c takes. Called with c.mu
// held.
func (c *Conn) tooLong(n int, pkt *wire.Packet) bool {
	return n > c.maxDatagram() || len(pkt.Payload) > c.maxDatagram()-wire.HeaderLen
}

// isJumbo reports whether b is a jumbo buffer.
func isJumbo(b *[]byte) bool { return b != nil && cap(*b) >= jumboBufSize }

// keepRx counts b among the buffers of c's received packets (the
// receiver's, the read queue's, a milk message's being assembled, and
// the spares; not the partials', charged apart: conn_frag.go): c.rxBig
// counts the jumbo ones. Called with c.mu held.
func (c *Conn) keepRx(b *[]byte) {
	if isJumbo(b) {
		c.rxBig++
	}
}

// dropRx notes that b, one of the buffers keepRx counted, leaves c.
// Called with c.mu held.
func (c *Conn) dropRx(b *[]byte) {
	if isJumbo(b) {
		c.rxBig--
	}
}

// freeRx returns b, one of the buffers keepRx counted, to its pool.
// Called with c.mu held.
func (c *Conn) freeRx(b *[]byte) {
	c.dropRx(b)
	putBuf(b)
}

// holdJumbo makes sure the budget holds room for one more jumbo buffer
// among c's received packets, charging up to jumboChunk more; it reports
// false when the budget has no room. Called with c.mu held.
func (c *Conn) holdJumbo() bool {
	if c.bud == nil || c.rxBig < c.bigHeld {
		return true
	}
	k := c.bud.takeUnits(c.budPeer, jumboExtra, 1, jumboChunk)
	if k == 0 {
		if len(c.rxSpare) == 0 {
			return false
		}
		c.putRxSpare() // emptied jumbo buffers give their room
		return c.rxBig < c.bigHeld
	}
	c.bigHeld += k
	c.charged += int64(k) * jumboExtra
	return true
}

// jumboBase is the jumbo buffers c's charge holds whatever it uses:
// baseWindow once c takes jumbo datagrams. Called with c.mu held.
func (c *Conn) jumboBase() int {
	if c.rxJumbo {
		return baseWindow
	}
	return 0
}

// partialCost is what the budget charges for each partial sequence
// number c reassembles past the first (conn_frag.go): a jumbo buffer's
// once c takes jumbo datagrams, whose payloads then come in fragments of
// up to that size. Called with c.mu held.
func (c *Conn) partialCost() int64 {
	if c.rxJumbo {
		return rxJumboCost
	}
	return rxCost
}

// Flow control in bytes. A receive window counts packets of MaxPayload
// bytes: that is what Config.ReceiveWindow is divided by, and what the
// listener's budget expects a window to hold. A packet above MaxPayload
// takes more than its sequence number's share, so the receiver counts
// the bytes its unread packets carry beyond MaxPayload (readExtra) as
// taken room (window), and a sender sends a jumbo packet only within
// the bytes of the window the peer last advertised (jumboLimit), as if
// every packet up to it had the largest payload. The receiver drops a
// jumbo packet beyond the bytes it has (jumboRoom), which a sender
// keeping to jumboLimit never sends: the room the receiver had when it
// advertised the window, less the most each packet delivered since can
// take, still holds it. Its end, so measured, may fall as jumbo packets
// are delivered unread, so the receiver takes small packets up to the
// end it advertised furthest (rcvEdge), which the sender may have used.

// jumboLimit is the flow-control limit for a jumbo packet: the peer
// expects exp next and has room for win packets of MaxPayload bytes, so
// for win*MaxPayload/n of payload n.
func jumboLimit(exp, win uint64, n int) uint64 {
	return exp + win*MaxPayload/uint64(n)
}

// jumboRoom is how many packets of payload n fit the room c's window
// has left, beyond the expected sequence number. Called with c.mu held.
func (c *Conn) jumboRoom(n int) uint64 {
	free := (c.rcvCap-c.readLen())*MaxPayload - c.readExtra
	return uint64(max(free, 0) / n)
}

// extraBytes is what a received packet carries beyond MaxPayload.
func extraBytes(d *rxData) int { return max(len(d.data)-MaxPayload, 0) }

// takeJumbo reports whether c takes an authenticated datagram above
// MaxDatagramSize. The first one charges c's jumbo base (jumboBase) and,
// if the partials past the first are charged, the difference to a jumbo
// buffer each (partialCost). Called with c.mu held.
func (c *Conn) takeJumbo() bool {
	if c.rxJumbo {
		return true
	}
	if c.state != stateEstablished {
		return false
	}
	n := int64(baseWindow) * jumboExtra
	if c.frags.charged {
		n += (maxPartials - 1) * jumboExtra
	}
	if !c.charge(n) {
		c.stats.BudgetDropped++
		return false
	}
	c.bigHeld += baseWindow
	c.rxJumbo = true
	return true
}
