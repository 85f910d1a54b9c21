//go:build linux

package tcp

import (
	"net"
	"time"

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

// unanswered reports whether c has data the peer has not acknowledged and
// has received no acknowledgement for at least d: the peer has vanished.
// A peer whose reader paused still answers the zero-window probes.
func unanswered(c *net.TCPConn, d time.Duration) bool {
	info := tcpInfo(c)
	return info != nil && info.Unacked > 0 && time.Duration(info.Last_ack_recv)*time.Millisecond >= d
}

// tcpInfo reads c's TCP_INFO, or returns nil if it cannot.
func tcpInfo(c *net.TCPConn) *unix.TCPInfo {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return nil
	}
	return info
}

// ackReporting says whether sendState can read the send queue.
const ackReporting = true

// peerFinished reports whether the peer's FIN has arrived while our side
// is still open (CLOSE_WAIT).
func peerFinished(c *net.TCPConn) bool {
	info := tcpInfo(c)
	return info != nil && info.State == unix.BPF_TCP_CLOSE_WAIT
}

// finReporting says whether peerFinished can tell.
const finReporting = true

// peerReset reports whether c was reset (CLOSE before our own close: the
// peer's RST).
func peerReset(c *net.TCPConn) bool {
	info := tcpInfo(c)
	return info != nil && info.State == unix.BPF_TCP_CLOSE
}

// resetReporting says whether peerReset can tell.
const resetReporting = true
