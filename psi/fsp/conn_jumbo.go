package fsp

import "github.com/postsockets/postsockets/psi/fsp/internal/wire"

// Jumbo datagrams: those above MaxDatagramSize, which path MTU discovery
// (pmtud.go) finds on loopback and on paths of a 9,000-byte MTU, up to
// Config.MaxPathMTU. A connection takes them only once authenticated
// (a handshake keeps to BaseDatagramSize, and nothing unauthenticated
// gets a reply larger than itself), and only if it can pay for them:
// its buffered packets then take jumbo buffers, so a listener charges
// each at rxJumboCost instead of rxCost, from the first such datagram
// on. When the budget has no room for that, the datagram is dropped, as
// the network might have: the peer's probe of that size is lost, and
// its search stops below.

// rxJumboCost is one received packet a connection that takes jumbo
// datagrams buffers, as the budget counts it: a jumbo buffer and, as for
// rxCost, its bookkeeping.
const rxJumboCost = jumboBufSize + 128

// maxDatagram is the largest datagram c takes from its peer: its search's
// ceiling, except on a listener whose MaxPathMTU is zero
// (Config.listenerRxMax).
func (c *Conn) maxDatagram() int { return max(c.rxMax, MaxDatagramSize) }

// tooLong reports whether an established connection's protected packet
// pkt, in a datagram of n bytes, is longer than c takes. Called with c.mu
// held.
func (c *Conn) tooLong(n int, pkt *wire.Packet) bool {
	return n > c.maxDatagram() || len(pkt.Payload) > c.maxDatagram()-wire.HeaderLen
}

// rxUnit is what the budget charges for each packet c buffers. Called
// with c.mu held.
func (c *Conn) rxUnit() int64 {
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
// MaxDatagramSize. The first one switches c to jumbo buffers: a listener
// charges the room it holds (and the fragment buffers, if charged) again
// at rxJumboCost. Called with c.mu held.
func (c *Conn) takeJumbo() bool {
	if c.rxJumbo {
		return true
	}
	if c.state != stateEstablished {
		return false
	}
	n := int64(c.held)
	if c.frags.charged {
		n += maxPartials - 1
	}
	if !c.charge(n * (rxJumboCost - rxCost)) {
		c.stats.BudgetDropped++
		return false
	}
	c.rxJumbo = true
	return true
}
