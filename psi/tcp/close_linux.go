//go:build linux

package tcp

import (
	"net"

	"golang.org/x/sys/unix"
)

// sendState reports how many bytes c has sent that the peer has not yet
// acknowledged (or not yet sent at all), and whether the connection was
// reset, which empties the send queue. ok is false where the kernel
// cannot tell.
func sendState(c *net.TCPConn) (unacked int, reset, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false, false
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		unacked, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if err == nil {
			info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		}
	})
	if cerr != nil || err != nil || info == nil {
		return 0, false, false
	}
	// Before our FIN, only a reset leads to CLOSE.
	return unacked, info.State == unix.BPF_TCP_CLOSE, true
}
