package fsp

import (
	"bytes"
	"context"
	"time"

	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// 0-RTT (see doc.go, "Resumption and 0-RTT"). A dial with
// Config.Allow0RTT and a ticket sends RESTORE and returns at once, as a
// QUIC client sends its ClientHello, so a caller that reads first waits
// one round trip. The first whole message written before the handshake
// ends, if it fits and the caller allows it, goes as 0-RTT data in a
// copy of that RESTORE (same nonce, key and ticket), which then stands
// for it in retransmissions. Any other call before the handshake ends
// waits for it. The message is the initiator's sequence number 1 however
// it travels, so a copy the listener took as 0-RTT data and also gets
// under the session keys is a duplicate.

// Early states of an initiator.
const (
	earlyNone uint8 = iota // not a 0-RTT dial, or a first message waited
	earlyOpen              // RESTORE sent; the first message may go 0-RTT
	earlySent              // the first message went in a RESTORE
)

// writeEarly handles a write before the handshake completed. On a 0-RTT
// dial the first whole message that fits travels in RESTORE, if
// idempotent says the caller allows it; any other write waits for the
// handshake. It reports whether the write is done.
func (c *Conn) writeEarly(ctx context.Context, p []byte, end bool, acked func(), idempotent bool) (bool, error) {
	c.mu.Lock()
	if c.state >= stateEstablished {
		c.mu.Unlock()
		return false, nil
	}
	if c.earlyState == earlyOpen {
		if c.resume != nil && idempotent && end && len(p) <= earlyRoom(c.resume) {
			c.earlyData, c.earlyAcked = bytes.Clone(p), acked
			if c.earlyData == nil {
				c.earlyData = []byte{}
			}
			// The copy with the message replaces RESTORE: it leaves
			// now, and the handshake timer repeats it.
			c.hsPacket = c.restorePacket(c.resume, time.Now(), p)
			c.earlyState = earlySent
			c.t.write(c.hsPacket, &c.remote)
			c.mu.Unlock()
			return true, nil
		}
		c.earlyState = earlyNone // this first message waits
	}
	c.mu.Unlock()
	return false, c.awaitEarly(ctx)
}

// awaitEarly waits until the handshake ends, for calls made on a
// connection that Dial or Accept returned before it did.
func (c *Conn) awaitEarly(ctx context.Context) error {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st >= stateEstablished {
		return nil
	}
	select {
	case <-c.established:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openEstablished ends the initiator's handshake: a 0-RTT message the
// listener did not say it took is queued as the first message (sequence
// number 1), ahead of any other write. Called with c.mu held.
func (c *Conn) openEstablished() {
	if c.earlyData != nil && !c.earlyTaken {
		n := len(c.earlyData)
		d := txData{n: n, op: wire.PureData, flags: wire.FlagEOT, acked: c.earlyAcked}
		if n > 0 {
			d.buf = getBuf()
			copy((*d.buf)[:n], c.earlyData)
		}
		c.snd.Push(d, n+overhead)
		c.sndBytes += n + overhead
	} else if c.earlyData != nil && c.earlyAcked != nil {
		c.ackedFns = append(c.ackedFns, c.earlyAcked)
	}
	c.earlyData, c.earlyAcked = nil, nil
	c.earlyState = earlyNone
	close(c.established)
}

// openEarly opens a RESTORE's 0-RTT message at the listener and queues it
// for the reader as the initiator's sequence number 1. Called with c.mu
// held, before the connection is confirmed.
func (c *Conn) openEarly(secret []byte, req *restoreRequest) bool {
	if len(req.early) == 0 || !c.cfg.Allow0RTT || c.earlyIn {
		return false
	}
	buf := getBuf()
	d := fcrypto.NewDirection(fcrypto.EarlySecret(secret, req.nonce))
	pt, err := d.Open((*buf)[:0], 0, req.aad, req.early)
	if err != nil || len(pt) > MaxPayload {
		putBuf(buf)
		return false
	}
	c.pushRead(rxData{buf: buf, data: pt, eot: true})
	c.earlyIn = true
	signal(c.readable)
	return true
}

// takeEarly takes the 0-RTT message of a RESTORE repeated for a resumed
// connection that answered it without one: the initiator wrote its first
// message after RESTORE had left. Only until the initiator confirms, only
// the first message, only under the binder key of the RESTORE taken. The
// answer, now saying the message was taken, goes again at once, and a
// new ticket after it; it is smaller than the RESTORE. The connection, handed to Accept already,
// reads it as the initiator's sequence number 1: nothing else came from
// the initiator yet. It reports whether the message was taken.
func (c *Conn) takeEarly(b []byte, req *restoreRequest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ea := c.earlyResp
	if ea == nil || ea.taken == nil || c.earlyIn || string(req.nonce) != string(c.peerNonce) ||
		c.state != stateEstablished || c.rcv.Expected() != 1 || c.rcv.Span() != 0 {
		return false
	}
	if _, ok := fcrypto.VerifyHandshakeTag(c.hsKey, b); !ok {
		return false
	}
	if !c.openEarly(ea.secret, req) {
		return false
	}
	c.rcv = reliability.NewReceiver[rxData](2)
	c.hsPacket = ea.taken
	ea.secret, ea.taken = nil, nil
	c.ampReceived(len(b))
	c.reaffirmAt = time.Now().Add(hsInitialRTO / 2)
	if c.ampRoom(len(c.hsPacket)) {
		c.ampSent(len(c.hsPacket))
		c.t.write(c.hsPacket, &c.remote)
		// The copy is a repeat for the ticket too: the initiator may
		// have lost the first answer and the ticket after it, and
		// repeats no RESTORE once this answer reaches it. Once per
		// connection; a repeat gets the next after reaffirmAt.
		c.issueTicket(time.Now())
	}
	return true
}

// tookEarly reports whether the listener holds the initiator's first
// message, taken as 0-RTT data.
func (c *Conn) tookEarly() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.earlyIn
}

// Used0RTT reports whether the listener accepted 0-RTT data on this
// resumed connection, both ends allowing it. At the initiator it also
// means that the first message did not wait for the handshake: it went
// as 0-RTT data, or was written after the handshake ended. At the
// listener the first message may have come as 0-RTT data (and so may be
// a replay, within the limits doc.go gives); it did unless the initiator
// wrote it after the handshake or the RESTORE carrying it was lost. Such
// a connection was handed to Accept on RESTORE, before the initiator
// confirmed, and may have sent 0.5-RTT data.
// QUIC reports the same: whether the server accepted 0-RTT.
func (c *Conn) Used0RTT() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used0RTT
}

// HandshakeComplete is closed once the handshake ended either way. A
// 0-RTT dial, and a listener's connection handed out on a 0-RTT
// resumption (which may send 0.5-RTT data meanwhile: conn_halfrtt.go),
// return before it.
func (c *Conn) HandshakeComplete() <-chan struct{} { return c.established }

// HandshakeErr is why the handshake failed (the connection closed before
// it ended), once HandshakeComplete is closed; nil otherwise. The
// listener took nothing from a RESTORE it refused or never got; one
// whose answer was lost may have taken its 0-RTT message.
func (c *Conn) HandshakeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.hsFailed:
		return nil
	case c.err == nil:
		return post.ErrClosed
	}
	return c.err
}
