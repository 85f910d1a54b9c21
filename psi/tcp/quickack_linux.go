//go:build linux

package tcp

import (
	"net"

	"golang.org/x/sys/unix"
)

// quickAck sends at once the ACK the kernel is delaying for data already
// read, so a peer waiting in Close for it does not wait out the delayed
// ACK timer (40 ms at least on Linux). With no ACK pending it only leaves
// the kernel's interactive (delayed-ACK) mode.
func quickAck(c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
}
