package tcp

// ReadBacklog (psi.BacklogReporter) reports whether the kernel holds
// bytes from the peer that no read took yet (Linux; false elsewhere).
// What TCP holds beyond a loss is not visible: held is always false.
func (t *transient) ReadBacklog() (ready, held bool) {
	return t.tcp != nil && unread(t.tcp), false
}
