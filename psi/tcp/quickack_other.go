//go:build !linux

package tcp

import "net"

// quickAck does nothing where Close does not wait for acknowledgements.
func quickAck(*net.TCPConn) {}
