package fsp

import (
	"context"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Fork credit, like QUIC's MAX_STREAMS: each end tells its peer, in the
// FORK_CREDIT extension of its acknowledgements, how many clones counted
// from the start of the connection the peer may fork from it. A Fork
// beyond the credit waits for more instead of being refused, so a clone
// is never lost for want of room.
//
// Credit is granted once the application calls AcceptFork, a few clones
// (initialForkCredit) ahead of those that arrived, and never more than
// Config.MaxUnacceptedForks ahead of those AcceptFork returned. Before
// hearing any credit a root connection may fork initialForkCredit
// clones, a clone none. Credit bounds how many clones wait; their memory
// is charged to a listener's budget when they arrive: a clone's first
// packet arriving when the budget has no room is dropped unacknowledged,
// and the peer's clone sends it again.
const initialForkCredit = 4

// forkCreditProbeMax caps the interval between requests for credit of a
// blocked Fork.
const forkCreditProbeMax = time.Second

// grantForks raises the credit given to the peer as far as the rules
// above allow. Called with c.mu held.
func (c *Conn) grantForks() {
	if !c.acceptsForks || c.state != stateEstablished {
		return
	}
	target := min(c.forkTaken+uint64(c.cfg.maxForks()), c.forkMade+initialForkCredit)
	c.forkCredit = max(c.forkCredit, target)
}

// sendCredit sends an acknowledgement carrying new credit. Called with
// c.mu held.
func (c *Conn) sendCredit() {
	if c.forkCredit > c.creditSent {
		c.ackNow = true
		c.trySend()
	}
}

// tookFork records that AcceptFork took a clone from the queue.
func (c *Conn) tookFork() {
	c.mu.Lock()
	c.forkTaken++
	c.grantForks()
	c.sendCredit()
	c.mu.Unlock()
}

// onCredit takes the fork credit the peer sent. Called with c.mu held.
func (c *Conn) onCredit(pkt *wire.Packet) {
	if !pkt.HasCredit {
		return
	}
	if v := wire.DecodeSeq(c.peerCredit, pkt.Credit); v > c.peerCredit {
		c.peerCredit = v
		signal(c.forkable)
	}
}

// waitCredit waits, for Fork, until the peer's credit may have grown,
// asking for it now and then. Called with c.mu held; it returns with
// c.mu held, except on error.
func (c *Conn) waitCredit(ctx context.Context) error {
	c.forkWaiters++
	if c.creditAt.IsZero() {
		c.ackReq = true // ask at once
		c.creditAt = time.Now().Add(c.creditProbe())
		c.trySend()
	}
	c.mu.Unlock()
	err := c.wait(ctx, c.forkable)
	c.mu.Lock()
	c.forkWaiters--
	if c.forkWaiters == 0 {
		c.creditAt = time.Time{}
	}
	if err != nil {
		if c.forked < c.peerCredit {
			signal(c.forkable) // pass on a wake-up this Fork will not use
		}
		c.mu.Unlock()
	}
	return err
}

// creditProbe is the interval between credit requests of a blocked Fork.
func (c *Conn) creditProbe() time.Duration {
	return min(max(c.rtt.RTO(), minProbeInterval), forkCreditProbeMax)
}

// onCreditTimer asks again for credit while a Fork waits. Called with
// c.mu held from the timer.
func (c *Conn) onCreditTimer(now time.Time) {
	if c.creditAt.IsZero() || now.Before(c.creditAt) {
		return
	}
	if c.forkWaiters > 0 && c.forked >= c.peerCredit {
		c.ackReq = true
		c.creditAt = now.Add(c.creditProbe())
	} else {
		c.creditAt = time.Time{}
	}
}
