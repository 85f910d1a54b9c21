package fsp

import (
	"context"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// routeClone hands a packet from one of the peer's clones of c to that
// clone, making the clone when a MULTIPLY authenticates.
func (c *Conn) routeClone(b []byte, from *peerAddr, pkt *wire.Packet) *Conn {
	c.mu.Lock()
	clone := c.clones[pkt.Src]
	fresh := false
	if clone == nil && pkt.Opcode == wire.Multiply && c.state == stateEstablished && !c.usedClones[pkt.Src] {
		clone, fresh = c.newClone(pkt.Src, false), true
	}
	c.mu.Unlock()
	if clone == nil {
		return nil
	}
	fc := clone.handlePacket(b, from, pkt)
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
	q := c.forkQueue()
	c.mu.Unlock()
	select {
	case q <- clone:
	default:
		clone.teardown(post.Errorf(post.ErrRefused, "fsp: fork queue full"), true)
		return nil
	}
	return fc
}

func (c *Conn) forkQueue() chan *Conn {
	if c.forks == nil {
		c.forks = make(chan *Conn, 16)
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
	cl.peerParam = c.peerParam
	cl.peerCerts = c.peerCerts // a clone speaks for the same peer
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
	cl.installKeys()
	cl.establish(time.Now())
	cl.confirmed = !forked
	return cl
}

// Fork clones the connection (MULTIPLY): the clone shares the session
// keys, so it needs no handshake and its first packet can carry data. The
// peer receives it from AcceptFork. The clone is wine-class, like every
// connection: see ForkClass.
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
	c.mu.Lock()
	if c.state != stateEstablished || c.peerReleased {
		err := c.stateErr()
		c.mu.Unlock()
		return nil, err
	}
	cl := c.newClone(0, true)
	c.mu.Unlock()
	if cl == nil {
		return nil, post.Errorf(post.ErrClosed, "fsp: transport closed")
	}
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
func (c *Conn) AcceptFork(ctx context.Context) (*Conn, error) {
	c.mu.Lock()
	q := c.forkQueue()
	c.mu.Unlock()
	select {
	case cl := <-q:
		return cl, nil
	case <-c.done:
		return nil, c.Err()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
