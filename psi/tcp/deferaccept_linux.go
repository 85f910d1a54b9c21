//go:build linux

package tcp

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// deferAccept has the kernel hand a connection to Accept only once its
// client has sent something (the TLS ClientHello), within about d: a
// socket that never speaks takes no handshake slot.
func deferAccept(d time.Duration) func(network, address string, c syscall.RawConn) error {
	secs := max(1, int(d/time.Second))
	return func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
		})
	}
}
