package carrier

import (
	"errors"
	"sync"
)

// HoldSender stops c's sender taking queued messages until release is
// called, so tests can queue several and observe their order.
func HoldSender(c *Carrier) (release func()) {
	c.queue.hold(true)
	return func() { c.queue.hold(false) }
}

// ConnClosed reports whether n's Close has been called.
func ConnClosed(n *Conn) bool { return n.closed.Load() }

// RetireBeforeNextWrite makes the next write retire c's transient, as the
// idle timeout does, after the write chose that transient and before it
// takes the write lock.
func RetireBeforeNextWrite(c *Carrier) { c.beforeWriteLock = retireOnce(c) }

// RetireBeforeNextFork makes the next Fork retire c's transient, as the
// idle timeout does, after the Fork chose that transient.
func RetireBeforeNextFork(c *Carrier) { c.beforeFork = retireOnce(c) }

// retireOnce returns a hook that retires c's transient the first time it
// runs.
func retireOnce(c *Carrier) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			if t := c.transient(); t != nil && c.lockWrite(c.ctx) {
				c.retire(t, errors.New("test: idle timeout"))
				c.unlockWrite()
			}
		})
	}
}

// SinkQueued returns how many messages s queued for Receive.
func SinkQueued(s *Sink) int { return len(s.msgs) }

// ResponderQueued returns how many requests r queued for Receive.
func ResponderQueued(r *Responder) int { return len(r.reqs) }

// DialerWithCache is Dialer keeping its Associations in assocs.
var DialerWithCache = dialer
