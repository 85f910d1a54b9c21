package carrier

import (
	"context"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// forksLeft holds the forks the peer made of a transient before it closed
// it in order: reading the close ends the Carrier and closes the
// transient, which would drop them, so they are taken from the transient
// first and handed to AcceptFork from here.
type forksLeft struct {
	done chan struct{} // closed once the transient is drained and closed
	q    []psi.Transient
}

// keepForks drains the forks queued on t, which the peer closed in order,
// into c.left and then closes t, in the background; it reports whether it
// took t. Only a Carrier that can accept forks does.
func (c *Carrier) keepForks(t psi.Transient) bool {
	if c.kind != kindFull || c.forkAllowed() != nil || !t.Features().Has(psi.Fork) {
		return false
	}
	l := &forksLeft{done: make(chan struct{})}
	c.mu.Lock()
	c.left = l
	c.mu.Unlock()
	go func() {
		defer close(l.done)
		// The peer's close has arrived: each stack then returns the forks
		// queued and fails at once (TCP on Linux: within its 100 ms look
		// at the socket), so the linger only bounds a stack that would
		// wait; Close and Abort end it at once.
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.linger())
		defer cancel()
		for {
			f, err := t.AcceptFork(ctx)
			if err != nil {
				break
			}
			c.mu.Lock()
			l.q = append(l.q, f)
			c.mu.Unlock()
		}
		t.Close()
	}()
	return true
}

// leftFork returns the next fork kept by keepForks, waiting until the
// drain is done or ctx ends; nil if there is none.
func (c *Carrier) leftFork(ctx context.Context) psi.Transient {
	c.mu.Lock()
	l := c.left
	c.mu.Unlock()
	if l == nil {
		return nil
	}
	select {
	case <-l.done:
	case <-ctx.Done():
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(l.q) == 0 {
		return nil
	}
	f := l.q[0]
	l.q[0] = nil
	l.q = l.q[1:]
	return f
}

// dropLeftForks waits for the drain (c.ctx is cancelled by now, which
// ends it) and aborts the forks nobody accepted.
func (c *Carrier) dropLeftForks() {
	c.mu.Lock()
	l := c.left
	c.mu.Unlock()
	if l == nil {
		return
	}
	<-l.done
	c.mu.Lock()
	q := l.q
	l.q = nil
	c.mu.Unlock()
	for _, f := range q {
		psi.Abort(f, post.ErrClosed)
	}
}
