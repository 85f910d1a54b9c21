package fsp

import (
	"context"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// 0.5-RTT data (see doc.go, "Resumption and 0-RTT"). A listener that
// accepts 0-RTT on a fresh RESTORE (the ticket opened, the binder
// checked, the strike register saw the nonce first) opens the
// connection's data path at once and hands it to Accept: what the
// application writes leaves before the initiator confirms, as QUIC's
// 0.5-RTT data does, under the session keys, which only the holder of the
// ticket's secret and of RESTORE's ephemeral key derives. So a client
// that reads first gets the server's first message one round trip after
// Dial, not two.
//
// Until the initiator's first authenticated packet proves that it
// receives at its address (it derived the keys from the answer sent
// there), the connection sends that address at most amplification (3)
// times the bytes of the RESTOREs it received from it, the answers
// included (RFC 9000 §8.1): a RESTORE raced from a spoofed source gets no
// more. What does not fit waits for the confirmation; so does a Fork, and
// no probe timeout fires while data waits (RFC 9002 §6.2.2.1). A
// confirmation that does not come within the handshake timeout ends the
// connection.

// flagHalfRTT marks, in the authenticated header, a protected packet the
// listener sent before the initiator's confirmation reached it: the
// initiator, which took the listener's first protected packet for the
// confirmation's answer, goes on asking for one until a packet without
// the flag comes. Without it a client whose confirmations were all lost
// would wait, as the listener does, for the other to speak.
const flagHalfRTT = 1 << 5

// halfFlag returns flagHalfRTT while c sends 0.5-RTT data. Called with
// c.mu held.
func (c *Conn) halfFlag() uint8 {
	if c.earlyResp != nil {
		return flagHalfRTT
	}
	return 0
}

// earlyResp is what a listener keeps of a 0-RTT resumption until the
// initiator confirms: what takes a first message that comes in a copy of
// the RESTORE it answered without one (the ticket's secret, and its
// answer saying it took the message; nil once taken), and the
// anti-amplification account. Kept apart from Conn, which every pending
// handshake holds.
type earlyResp struct {
	secret, taken []byte
	recv, sent    int  // bytes received from the initiator's address, and sent to it
	blocked       bool // a packet waited for room
}

// ampRoom reports whether a packet of n bytes fits the amplification
// bound; any does once the address is validated. Called with c.mu held.
func (c *Conn) ampRoom(n int) bool {
	e := c.earlyResp
	if e == nil || e.sent+n <= amplification*e.recv {
		return true
	}
	e.blocked = true
	return false
}

// ampSent counts n bytes sent before validation. Called with c.mu held.
func (c *Conn) ampSent(n int) {
	if e := c.earlyResp; e != nil {
		e.sent += n
	}
}

// ampBlocked reports whether a packet waits for the bound. Called with
// c.mu held.
func (c *Conn) ampBlocked() bool { return c.earlyResp != nil && c.earlyResp.blocked }

// ampReceived counts a RESTORE of n bytes repeated by the initiator's
// address: more room. Called with c.mu held.
func (c *Conn) ampReceived(n int) {
	if e := c.earlyResp; e != nil {
		e.recv += n
		e.blocked = false
	}
}

// dataFits reports whether the packet fill would send next fits the
// bound. Called with c.mu held.
func (c *Conn) dataFits() bool {
	if c.earlyResp == nil {
		return true
	}
	e := c.snd.PeekNext(c.sendLimit())
	return e == nil || c.ampRoom(e.Value.n+sealRoom)
}

// halfOpen reports whether c is a listener's connection sending 0.5-RTT
// data, its initiator not confirmed yet. Called with c.mu held.
func (c *Conn) halfOpen() bool { return c.earlyResp != nil && c.state >= stateEstablished }

// resendHalf answers a RESTORE repeated while c sends 0.5-RTT data: the
// initiator lacks the answer, so it dropped the ticket that followed it
// and the data too. A new ticket goes first, and the data again as a
// probe would (the newest and oldest in flight), within the bound the
// repeat raised. Called with c.mu held, after the answer left.
func (c *Conn) resendHalf() {
	if c.state != stateEstablished && c.state != stateClosing {
		return
	}
	c.issueTicket(time.Now())
	if c.snd.BytesInFlight() > 0 {
		c.probes = max(c.probes, c.snd.Probe(2))
	}
	c.trySend()
}

// confirmHalf ends the half-open time: the initiator's first
// authenticated packet validated its address. Data the bound held goes
// with the next send; a probe timeout put off for it runs again. Called
// with c.mu held.
func (c *Conn) confirmHalf(now time.Time) {
	c.earlyResp = nil
	if c.ticket != nil {
		c.ticket.at = now.Add(c.ticketRetry()) // the ticket's timer starts now
	}
	if c.rtoAt.IsZero() && c.snd.BytesInFlight() > 0 {
		c.rtoAt = now.Add(c.lossTimeout())
	}
}

// awaitConfirmed waits until a listener's connection handed out on a
// 0-RTT resumption is confirmed, for calls that must not run before
// (Fork: a clone would send beyond the bound).
func (c *Conn) awaitConfirmed(ctx context.Context) error {
	c.mu.Lock()
	half := c.halfOpen()
	c.mu.Unlock()
	if !half {
		return nil
	}
	select {
	case <-c.established:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxHeld bounds the protected datagrams a resumed dial keeps while it
// waits for the listener's answer: 0.5-RTT data that overtook the answer
// or outlived its loss, and the ticket after it. The amplification bound
// lets about that many through before the client's repeated RESTOREs
// raise it; beyond, and for datagrams larger than MaxDatagramSize, they
// are dropped and the listener sends them again. Held while no key can
// tell them from forgeries, so kept few: they cost at most maxHeld
// pooled buffers per dial, until the answer or the dial's end.
const maxHeld = 4

// heldPacket is a datagram kept until the keys to open it are known.
type heldPacket struct {
	buf  *[]byte
	n    int
	from peerAddr
}

// holdEarly keeps a protected datagram that came to a resumed dial
// before the answer to its RESTORE, taking in.buf. Called with c.mu held.
func (c *Conn) holdEarly(in *inPacket) {
	rs := c.resume
	if rs == nil || c.state != stateInitiating || len(rs.held) >= maxHeld || in.buf == nil || in.n > MaxDatagramSize {
		c.stats.PacketsDropped++
		return
	}
	rs.held = append(rs.held, heldPacket{in.buf, in.n, in.from})
	in.buf = nil
}

// replayHeld receives the datagrams holdEarly kept, now that the answer
// installed the keys, in the order they came; they are dropped if the
// dial went on with a full handshake (no 0.5-RTT data then) or ended.
// Called with c.mu held.
func (c *Conn) replayHeld(held []heldPacket, deliver **Listener, now time.Time) {
	for _, h := range held {
		in := inPacket{buf: h.buf, n: h.n, from: h.from}
		var pkt wire.Packet
		if c.state == stateEstablished && wire.Parse(in.bytes(), &pkt) == nil && pkt.Src == c.peer {
			c.receive(&in, &pkt, deliver, &opened{}, now)
		} else {
			c.stats.PacketsDropped++
		}
		if in.buf != nil {
			putBuf(in.buf)
		}
	}
}
