package carrier

// HoldSender stops c's sender taking queued messages until release is
// called, so tests can queue several and observe their order.
func HoldSender(c *Carrier) (release func()) {
	c.queue.hold(true)
	return func() { c.queue.hold(false) }
}

// ConnClosed reports whether n's Close has been called.
func ConnClosed(n *Conn) bool { return n.closed.Load() }
