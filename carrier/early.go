package carrier

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/psi"
)

// A 0-RTT attempt returns from its dial before its handshake, so it wins
// its race as it starts (association.Race). If that handshake then fails
// (the listener no longer runs the stack, or UDP is blocked), nothing
// written to the transient was delivered (psi.ZeroRTTReporter): the
// Carrier drops it, the Association records the failure, and the first
// message goes again, once, on the winner of a race run without 0-RTT.

// earlyWin is a transient that won its race before its handshake ended.
type earlyWin struct {
	t    psi.Transient
	z    psi.ZeroRTTReporter
	cand association.Candidate
	drop sync.Once
}

// newEarlyWin returns the record of t if its handshake is still running
// or has failed already, else nil.
func newEarlyWin(t psi.Transient, cand association.Candidate) *earlyWin {
	z, ok := t.(psi.ZeroRTTReporter)
	if !ok {
		return nil
	}
	select {
	case <-z.HandshakeComplete():
		if z.HandshakeErr() == nil {
			return nil
		}
	default:
	}
	return &earlyWin{t: t, z: z, cand: cand}
}

// earlyOn returns the record of t if t won its race before its handshake
// and the sender has not yet seen that handshake end.
func (c *Carrier) earlyOn(t psi.Transient) *earlyWin {
	if e := c.early.Load(); e != nil && e.t == t {
		return e
	}
	return nil
}

// settleEarly waits, if t won its race before its handshake, until that
// handshake ends, or ctx does, and reports whether it failed: then t has
// been dropped and what was written to it must go again. The sender
// calls it once it wrote the first message.
func (c *Carrier) settleEarly(ctx context.Context, t psi.Transient) bool {
	e := c.earlyOn(t)
	if e == nil {
		return false
	}
	failed := c.earlyFailed(ctx, e)
	if failed || ctx.Err() == nil {
		c.early.CompareAndSwap(e, nil)
	}
	return failed
}

// earlyFailed waits until e's handshake ends, or ctx does, and reports
// whether it failed; then it drops e's transient.
func (c *Carrier) earlyFailed(ctx context.Context, e *earlyWin) bool {
	select {
	case <-e.z.HandshakeComplete():
	case <-ctx.Done():
		return false
	}
	err := e.z.HandshakeErr()
	if err == nil || c.closing.Load() {
		return false // completed, or Close or Abort ended it
	}
	e.drop.Do(func() { c.dropEarly(e, err) })
	return true
}

// dropEarly drops e's transient, whose handshake failed with why: the
// Carrier turns dormant, so that the sender's next write races again,
// and a Receive waits for that.
func (c *Carrier) dropEarly(e *earlyWin, why error) {
	c.mu.Lock()
	if c.t == e.t {
		c.t, c.selfRetired = nil, true
		if c.state == Active {
			c.state = Dormant
		}
	}
	c.mu.Unlock()
	c.assoc.Failed(e.cand)
	c.log.Debug("0-RTT attempt failed its handshake; racing again", "stack", e.t.Stack(), "err", why)
	c.post(Event{Kind: SoftError, Stack: e.t.Stack(), Err: fmt.Errorf("0-RTT attempt on %s failed its handshake; racing again: %w", e.t.Stack(), why), Time: time.Now()})
	psi.Abort(e.t, why)
}
