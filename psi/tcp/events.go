package tcp

import (
	"fmt"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// eventInterval is how often a transient with an event handler samples
// the kernel's retransmission backoff.
const eventInterval = 100 * time.Millisecond

// SetEventHandler (psi.EventSource) reports what the kernel tells of the
// connection: with Config.Events, on Linux, a retransmission timeout (the
// kernel backing off, TCP_INFO's tcpi_backoff) is a SoftError, once per
// stall. A TCP connection has one path, so there is no PathChange. Only
// the first handler set starts the sampling; later ones replace it.
func (t *transient) SetEventHandler(h func(psi.Event)) {
	if h == nil {
		t.evh.Store(nil)
		return
	}
	t.evh.Store(&h)
	if t.events && t.tcp != nil && t.evOnce.CompareAndSwap(false, true) {
		go t.watchBackoff()
	}
}

// watchBackoff samples the retransmission backoff until the transient
// is done.
func (t *transient) watchBackoff() {
	tick := time.NewTicker(eventInterval)
	defer tick.Stop()
	stalled := false
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		b, ok := backoff(t.tcp)
		if !ok {
			return
		}
		switch {
		case b == 0:
			stalled = false
		case !stalled:
			stalled = true
			if h := t.evh.Load(); h != nil {
				(*h)(psi.Event{Kind: psi.EventSoftError, Time: time.Now(),
					Old: post.Path{Local: t.local, Remote: t.remote, Active: true},
					Err: fmt.Errorf("tcp: retransmission timeout (backoff %d): %w", b, post.ErrTimeout)})
			}
		}
	}
}
