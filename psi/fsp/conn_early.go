package fsp

import (
	"bytes"
	"context"
	"time"

	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// 0-RTT (see doc.go, "Resumption and 0-RTT"). A dial with
// Config.Allow0RTT and a ticket returns at once; RESTORE leaves with the
// first write, carrying the message when it is whole and fits. Another
// write, a Fork or Close sends it without data at once, and so does the
// timer after earlyWait if none came. Reads and AcceptFork do not: a
// reader often starts before the first write. Every call but the first
// write waits for the handshake.

// earlyWait is how long a 0-RTT dial waits for its first write, Fork or
// Close before RESTORE leaves without data. A loaded host can delay the
// first write by tens of milliseconds after Dial returns (20 ms lost the
// 0-RTT message then); only a caller that just reads waits it out.
const earlyWait = 250 * time.Millisecond

// startEarly sends RESTORE without data if a 0-RTT dial still waits for
// its first write: the caller needs the handshake instead. Called with
// c.mu held.
func (c *Conn) startEarly() {
	if c.earlyState == earlyArmed {
		c.sendHandshake(time.Now())
		c.armTimer()
	}
}

// Early states of an initiator.
const (
	earlyNone  uint8 = iota // not a 0-RTT dial, or RESTORE sent without data
	earlyArmed              // Dial returned; RESTORE not sent yet
	earlySent               // RESTORE sent with the first message
)

// writeEarly handles a write before the handshake completed. On a 0-RTT
// dial the first whole message that fits travels in RESTORE, if
// idempotent says the caller allows it; any other write makes RESTORE
// leave without data and waits for the handshake. It reports whether the
// write is done.
func (c *Conn) writeEarly(ctx context.Context, p []byte, end bool, acked func(), idempotent bool) (bool, error) {
	c.mu.Lock()
	if c.state >= stateEstablished {
		c.mu.Unlock()
		return false, nil
	}
	if c.earlyState == earlyArmed {
		now := time.Now()
		if idempotent && end && len(p) <= earlyRoom(c.resume) {
			c.earlyData, c.earlyAcked = bytes.Clone(p), acked
			if c.earlyData == nil {
				c.earlyData = []byte{}
			}
			c.hsPacket = c.restorePacket(c.resume, now, p)
			c.earlyState = earlySent
			c.sendHandshake(now)
			c.armTimer()
			c.mu.Unlock()
			return true, nil
		}
		c.startEarly() // RESTORE without data
	}
	c.mu.Unlock()
	return false, c.awaitEarly(ctx)
}

// awaitEarly waits until the handshake ends, for calls made on a
// connection that Dial or Accept returned before it did, and sends
// RESTORE if a 0-RTT dial has not yet.
func (c *Conn) awaitEarly(ctx context.Context) error {
	c.mu.Lock()
	st := c.state
	c.startEarly()
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
// listener did not take is queued as the first message, ahead of any
// other write. Called with c.mu held.
func (c *Conn) openEstablished() {
	if c.earlyData != nil && !c.used0RTT {
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
// for the reader. Called with c.mu held, before the connection is
// confirmed.
func (c *Conn) openEarly(secret []byte, req *restoreRequest) bool {
	if len(req.early) == 0 || !c.cfg.Allow0RTT {
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

// Used0RTT reports whether the first message travelled as 0-RTT data and
// the listener took it (at the initiator), or whether the first message
// arrived as 0-RTT data (at the listener).
func (c *Conn) Used0RTT() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used0RTT || c.earlyIn
}

// HandshakeComplete is closed once the handshake ended either way. A
// 0-RTT dial, and a listener's connection handed out on a 0-RTT message,
// return before it.
func (c *Conn) HandshakeComplete() <-chan struct{} { return c.established }
