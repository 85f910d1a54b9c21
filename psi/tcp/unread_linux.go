//go:build linux

package tcp

import (
	"net"

	"golang.org/x/sys/unix"
)

// unread reports whether the kernel holds bytes from the peer that have
// not been read.
func unread(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return err == nil && n > 0
}
