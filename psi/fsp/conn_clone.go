package fsp

import (
	"context"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// routeClone hands a packet from one of the peer's clones of c to that
// clone, making the clone when a MULTIPLY authenticates. A RELEASE or a
// RESET makes it too: a clone closed or aborted before its first packet
// left sends that first, and the peer must count it against the fork
// credit all the same.
func (c *Conn) routeClone(in *inPacket, pkt *wire.Packet, now time.Time) *Conn {
	c.mu.Lock()
	clone := c.clones[pkt.Src]
	fresh := false
	creates := pkt.Opcode == wire.Multiply || pkt.Opcode == wire.Release || pkt.Opcode == wire.Reset
	if clone == nil && creates && c.state == stateEstablished && !c.usedClones[pkt.Src] {
		if !c.cloneOpens(pkt) {
			c.stats.PacketsDropped++
			c.mu.Unlock()
			return nil
		}
		if clone = c.newPeerClone(pkt.Src); clone == nil {
			c.mu.Unlock()
			return nil
		}
		fresh = true
	}
	gone := clone == nil && c.usedClones[pkt.Src] && c.clones[pkt.Src] == nil
	c.mu.Unlock()
	if gone && pkt.Opcode != wire.Reset && pkt.Opcode != wire.KeepAlive {
		// A clone of the peer's this end forgot, whose peer did not hear
		// the last word (the acknowledgement of its RELEASE, say): tell
		// it, as the transport does for a forgotten connection.
		c.resetForgotten(&in.from, pkt.Src, in.n)
	}
	if clone == nil {
		return nil
	}
	fc := clone.handlePacket(in, pkt, now)
	if !fresh {
		return fc
	}
	clone.mu.Lock()
	ok := clone.stats.PacketsReceived > 0
	clone.mu.Unlock()
	c.mu.Lock()
	if !ok {
		// The MULTIPLY did not authenticate: forget the clone.
		delete(c.clones, pkt.Src)
		delete(c.usedClones, pkt.Src)
		c.mu.Unlock()
		clone.teardown(post.Errorf(post.ErrMalformed, "fsp: forged MULTIPLY"), false)
		return nil
	}
	if c.cfg.NoForks {
		delete(c.clones, pkt.Src)
		c.mu.Unlock()
		// Refused as QUIC and TCP refuse it: the forking end's calls
		// fail with post.ErrRefused (RESET reason ResetRefused).
		clone.teardown(post.Errorf(post.ErrRefused, "fsp: forks are prohibited here"), true)
		return nil
	}
	if c.forkMade >= c.forkCredit {
		// Only a peer ignoring the fork credit gets here: refuse loudly.
		delete(c.clones, pkt.Src)
		c.mu.Unlock()
		clone.teardown(post.Errorf(post.ErrRefused, "fsp: clone beyond the fork credit"), true)
		return nil
	}
	c.forkMade++
	q := c.forkQueue()
	select {
	case q <- clone: // never full: the credit bounds the queue
	default:
		c.mu.Unlock()
		clone.teardown(post.Errorf(post.ErrRefused, "fsp: fork queue full"), true)
		return nil
	}
	c.grantForks()
	c.sendCredit()
	c.mu.Unlock()
	return fc
}

// newPeerClone makes the clone pkt.Src the peer forked, charged to c's
// budget. Without room in the budget it makes none: the opening packet
// is dropped unacknowledged and the peer's clone sends it again. Called
// with c.mu held.
func (c *Conn) newPeerClone(src uint32) *Conn {
	if !c.bud.take(c.budPeer, cloneCost) {
		c.stats.BudgetDropped++
		return nil
	}
	cl := c.newClone(src, false)
	if cl == nil {
		c.bud.give(c.budPeer, cloneCost)
		return nil
	}
	cl.chargeClone(c)
	return cl
}

// chargeClone records that c's budget holds cloneCost for clone cl of
// c's. Called with c.mu held.
func (cl *Conn) chargeClone(c *Conn) {
	if c.bud == nil {
		return
	}
	cl.mu.Lock()
	cl.bud, cl.budPeer, cl.charged, cl.held = c.bud, c.budPeer, cloneCost, baseWindow
	cl.mu.Unlock()
}

// cloneOpens reports whether the packet that would open the peer's
// clone pkt.Src authenticates under that clone's keys. It runs before
// anything is allocated or registered for the clone, so a forged MULTIPLY
// (or RELEASE, or RESET) costs a key derivation and a failed open. Called with c.mu held.
func (c *Conn) cloneOpens(pkt *wire.Packet) bool {
	pn := wire.DecodeSeq(1, pkt.PN)
	if c.master == nil || pkt.Flags&wire.FlagKeyPhase != 0 || len(pkt.Payload) > c.maxDatagram()-wire.HeaderLen ||
		pn>>fcrypto.EpochBits > 1 { // a fresh clone opens only the first two epochs
		return false
	}
	// The peer forked it, so the peer is the clone's initiator.
	i2r, _ := fcrypto.TrafficSecrets(c.master, pkt.Src, c.local)
	d := fcrypto.NewDirection(i2r)
	buf := getBufFor(len(pkt.Payload))
	_, err := d.Open((*buf)[:0], pn, pkt.HeaderBytes, pkt.Payload)
	putBuf(buf)
	return err == nil
}

// resetForgotten answers a packet of a clone of the peer's that c forgot
// with an unauthenticated RESET under the session's PSK, which that clone
// believes only as the last word of its close.
func (c *Conn) resetForgotten(to *peerAddr, clone uint32, n int) {
	if n < wire.HeaderLen+fcrypto.TagLen {
		return // no reply larger than the packet
	}
	p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: clone, Src: c.local}}
	var arr [wire.HeaderLen + fcrypto.TagLen]byte
	c.t.write(handshakePacket(arr[:0], fcrypto.HandshakeKey(c.cfg.Security.PSK, clone), &p, nil), to)
}

func (c *Conn) forkQueue() chan *Conn {
	if c.forks == nil {
		c.forks = make(chan *Conn, c.cfg.maxForks())
	}
	return c.forks
}

// newClone makes a clone of c, called with c.mu held. If forked, this end
// forks it and the peer's ALFID is learnt from its first answer;
// otherwise the peer forked it with ALFID peerClone.
func (c *Conn) newClone(peerClone uint32, forked bool) *Conn {
	cl := newConn(c.t, c.cfg, forked, c.remote)
	cl.parent = c
	cl.master = c.master
	cl.rcvCap = min(cloneWindow, cl.rcvMax)
	// The peer may fork from a clone once it grants credit (AcceptFork).
	cl.forkCredit, cl.peerCredit = 0, 0
	cl.peerParam = c.peerParam
	cl.peerCerts = c.peerCerts // a clone speaks for the same peer
	cl.inheritPMTU(c)          // and travels the same path
	cl.rxMax = c.rxMax
	for {
		if err := c.t.register(cl); err != nil {
			return nil
		}
		if !forked || !c.usedClones[cl.local] {
			break
		}
		c.t.unregister(cl) // never reuse a clone ALFID: it would reuse keys
	}
	if c.usedClones == nil {
		c.usedClones = make(map[uint32]bool)
	}
	if forked {
		cl.peer = c.peer
		cl.keyInitiator, cl.keyResponder = cl.local, c.peer
		c.usedClones[cl.local] = true
	} else {
		cl.peer, cl.peerKnown = peerClone, true
		cl.keyInitiator, cl.keyResponder = peerClone, c.local
		c.usedClones[peerClone] = true
		if c.clones == nil {
			c.clones = make(map[uint32]*Conn)
		}
		c.clones[peerClone] = cl
	}
	// A clone's peer forgets it like a connection: by an unauthenticated
	// RESET, believed only as the last word of a close (its tag key is
	// HandshakeKey(PSK, cl.local), unprotectedReset), or by a stateless
	// reset once the peer gave it a token (conn_reset.go).
	cl.installKeys()
	cl.establish(time.Now())
	// A clone shares its session's path: it starts from its RTT.
	cl.rtt = c.rtt
	// Until it hears otherwise, a clone may send what a fresh clone
	// takes: every clone starts with the same small window.
	cl.peerLimit = 1 + cloneWindow
	cl.peerExp, cl.peerWin = 1, cloneWindow
	cl.confirmed = !forked
	return cl
}

// Fork clones the connection (MULTIPLY): the clone shares the session
// keys, so it needs no handshake and its first packet can carry data. The
// peer receives it from AcceptFork. The clone is wine-class, like every
// connection: see ForkClass.
//
// Fork waits while the peer has as many clones of this connection
// waiting for AcceptFork as it allows (its Config.MaxUnacceptedForks,
// told by fork credit); ctx bounds the wait. A root connection may fork
// a few clones before hearing any credit, a clone none: forking from a
// clone waits until the peer called AcceptFork on it.
func (c *Conn) Fork(ctx context.Context) (*Conn, error) {
	return c.ForkClass(ctx, psi.Wine)
}

// ForkClass clones the connection with the given traffic class. A milk
// clone (psi.Milk) delivers the newest messages: each message is one
// transmit transaction, and once a newer message is complete the older
// unacknowledged ones are neither sent nor retransmitted again, the
// receiver skips what is missing of them, and a receiver whose reader is
// slow drops the oldest complete messages unread. Messages stay whole and
// in order: a reader never sees an older message after a newer one.
func (c *Conn) ForkClass(ctx context.Context, class psi.TrafficClass) (*Conn, error) {
	if c.cfg.NoForks {
		return nil, post.Errorf(post.ErrPolicyConflict, "fsp: forks are prohibited")
	}
	if err := c.awaitEarly(ctx); err != nil {
		return nil, err
	}
	if err := c.awaitConfirmed(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	for {
		if c.state != stateEstablished || c.peerReleased {
			err := c.stateErr()
			if c.state == stateEstablished {
				err = post.Errorf(post.ErrClosed, "fsp: peer released the connection")
				signal(c.forkable) // the next waiting Fork fails too
			}
			c.mu.Unlock()
			return nil, err
		}
		if c.forked < c.peerCredit {
			break
		}
		if err := c.waitCredit(ctx); err != nil {
			return nil, err
		}
	}
	// On a listener the clone is charged to its budget like the peer's.
	if !c.bud.take(c.budPeer, cloneCost) {
		c.mu.Unlock()
		return nil, post.Errorf(post.ErrBackpressure, "fsp: fork: listener memory budget exhausted")
	}
	c.forked++
	if c.forked < c.peerCredit {
		signal(c.forkable) // credit for another waiting Fork
	}
	cl := c.newClone(0, true)
	if cl == nil {
		c.bud.give(c.budPeer, cloneCost)
		c.mu.Unlock()
		return nil, post.Errorf(post.ErrClosed, "fsp: transport closed")
	}
	cl.chargeClone(c)
	c.mu.Unlock()
	if class == psi.Milk {
		cl.mu.Lock()
		cl.setMilk()
		cl.mu.Unlock()
	}
	// The clone announces itself with its first packet: the first message
	// written travels in it (zero round trips). If nothing is written
	// within forkAnnounce, a MULTIPLY without data announces it, repeated
	// until the peer's clone answers.
	cl.mu.Lock()
	cl.rtoAt = time.Now().Add(c.cfg.announceDelay())
	cl.armTimer()
	cl.mu.Unlock()
	return cl, nil
}

// AcceptFork returns the next clone the peer forked from this connection.
// Once the peer released the connection in order and no clone is queued,
// it fails with an error wrapping post.ErrClosed: the peer forks no more
// from it. What the peer sent stays queued for ReadMessage.
func (c *Conn) AcceptFork(ctx context.Context) (*Conn, error) {
	if c.cfg.NoForks {
		return nil, post.Errorf(post.ErrPolicyConflict, "fsp: forks are prohibited")
	}
	c.mu.Lock()
	q := c.forkQueue()
	if !c.acceptsForks {
		c.acceptsForks = true
		c.grantForks()
		c.sendCredit()
	}
	c.mu.Unlock()
	select {
	case cl := <-q:
		c.tookFork()
		return cl, nil
	default:
	}
	select {
	case cl := <-q:
		c.tookFork()
		return cl, nil
	case <-c.peerEnded:
		select {
		case cl := <-q:
			c.tookFork()
			return cl, nil
		default:
		}
		return nil, post.Errorf(post.ErrClosed, "fsp: peer released the connection")
	case <-c.done:
		return nil, c.Err()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
