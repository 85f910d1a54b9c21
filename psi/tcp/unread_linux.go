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

// discardUnread drops the bytes waiting in the kernel's receive queue
// without blocking, and without copying them: on a TCP socket MSG_TRUNC
// discards (tcp(7)), so no buffer is passed. What arrives later is the
// peer's to lose.
func discardUnread(c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for range 64 {
			n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, 0, 1<<20,
				unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
			if errno != 0 || n == 0 {
				return
			}
		}
	})
}
