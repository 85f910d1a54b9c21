//go:build !linux

package tcp

import "net"

// sendState cannot read the send queue here; Close waits for the peer's
// end of stream instead.
func sendState(c *net.TCPConn) (unacked int, reset, ok bool) { return 0, false, false }
