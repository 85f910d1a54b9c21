package fsp

import (
	"crypto/subtle"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Reset tokens (reset_token.go): each end asks its peer for the token of
// the connection (wire.FlagTokenRequest on its protected packets) until
// one arrives; an end whose Transport has a listener answers in the
// encrypted payload of its next acknowledgement (wire.FlagResetToken).
// Roots and clones alike ask, so every connection of a session has its
// own token, and none is sent in clear. A stateless reset carrying the
// token ends the connection with post.ErrReset; any other is ignored
// (or taken as a plain RESET where one is believed).

// tokenFlag is the flag asking the peer for a reset token while c has
// none. Called with c.mu held.
func (c *Conn) tokenFlag() uint8 {
	if c.resetToken == nil {
		return wire.FlagTokenRequest
	}
	return 0
}

// onTokenFlags takes the token an authenticated packet carries, and
// notes the peer's request for ours. Called with c.mu held.
func (c *Conn) onTokenFlags(pkt *wire.Packet, pt []byte) {
	if pkt.Flags&wire.FlagResetToken != 0 && pkt.Opcode == wire.KeepAlive && len(pt) >= wire.ResetTokenLen && c.resetToken == nil {
		tok := new([wire.ResetTokenLen]byte)
		copy(tok[:], pt)
		c.resetToken = tok
	}
	if pkt.Flags&wire.FlagTokenRequest != 0 && !c.tokenOwed && c.peerKnown && c.t.reset.Load() != nil {
		c.tokenOwed, c.ackNow = true, true
	}
}

// resetProbePad pads an acknowledgement request of a connection that
// holds a token beyond wire.StatelessResetLen, so that a peer that forgot
// the connection may answer it with a stateless reset.
var resetProbePad [wire.ResetTokenLen]byte

// ackPayload returns the payload of an acknowledgement with flags: the
// token owed to the peer (setting wire.FlagResetToken), or padding for an
// acknowledgement request. Called with c.mu held.
func (c *Conn) ackPayload(flags *uint8) []byte {
	if c.tokenOwed {
		c.tokenOwed = false
		if r := c.t.reset.Load(); r != nil {
			tok := r.token(c.local, c.peer, c.events.local) // where the peer's packets come
			*flags |= wire.FlagResetToken
			return tok[:]
		}
	}
	if *flags&wire.FlagAckRequest != 0 && c.resetToken != nil {
		return resetProbePad[:]
	}
	return nil
}

// statelessReset takes a RESET that carries the connection's reset token:
// the peer no longer knows the connection (it restarted, or forgot it).
// It reports whether the RESET was one. Called with c.mu held.
func (c *Conn) statelessReset(pkt *wire.Packet) bool {
	got, ok := wire.StatelessResetToken(pkt)
	tok := c.resetToken
	if !ok || tok == nil || subtle.ConstantTimeCompare(got, tok[:]) != 1 {
		return false
	}
	if c.state == stateClosing && c.sentRelease && c.snd.Base() >= c.releaseSeq {
		c.releaseDone() // everything was acknowledged: the last word
		return true
	}
	err := post.Errorf(post.ErrReset, "fsp: the peer no longer knows the connection (stateless reset)")
	c.failLocked(err)
	// Our clones that never heard from the peer sent their MULTIPLYs to
	// the ALFID it forgot: they are gone too.
	go c.failUnanswered(err)
	return true
}

// failUnanswered ends c's forked clones that have not heard from the
// peer with err.
func (c *Conn) failUnanswered(err error) {
	var clones []*Conn
	c.t.mu.Lock()
	for _, cl := range c.t.conns {
		if cl.parent == c {
			clones = append(clones, cl)
		}
	}
	c.t.mu.Unlock()
	for _, cl := range clones {
		cl.mu.Lock()
		if !cl.peerKnown && cl.state == stateEstablished {
			cl.failLocked(err)
		}
		cl.mu.Unlock()
	}
}

// unansweredReset reports whether pkt, an unauthenticated RESET to a
// forked clone that has not heard from its peer, should make its parent
// probe the peer: a stateless reset answering the clone's MULTIPLY
// carries no token the clone holds, but says the peer may have forgotten
// the parent. Called with c.mu held.
func (c *Conn) unansweredReset(pkt *wire.Packet) bool {
	return pkt.Opcode == wire.Reset && c.parent != nil && !c.peerKnown && c.state == stateEstablished &&
		(len(pkt.Payload) == wire.StatelessResetTag || len(pkt.Payload) == wire.ResetTokenLen+wire.StatelessResetTag)
}

// probeForReset has c ask the peer for an acknowledgement, padded so
// that a peer that forgot c answers with a stateless reset. A forged
// RESET costs one such probe, to the peer.
func (c *Conn) probeForReset() {
	c.mu.Lock()
	if c.state == stateEstablished && c.resetToken != nil {
		c.ackReq = true
		c.trySend()
	}
	c.mu.Unlock()
}
