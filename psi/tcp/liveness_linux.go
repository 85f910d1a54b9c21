//go:build linux

package tcp

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// liveReporting says whether sampleLive can tell.
const liveReporting = true

// sampleLive reads what liveness needs from the kernel: TCP_INFO's byte
// counters, window, state and time since the last acknowledgement (the
// check unanswered makes), and the send and receive queues. The
// window is shut when less than two segments are left of it with data
// unread; a kernel before 6.2, which does not report the window (zero),
// takes any unread data for a shut window.
func sampleLive(c *net.TCPConn) (s liveSample, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return s, false
	}
	var info *unix.TCPInfo
	var inq int
	cerr := rc.Control(func(fd uintptr) {
		if info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			return
		}
		if s.queued, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err != nil {
			return
		}
		inq, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	if cerr != nil || err != nil || info == nil {
		return s, false
	}
	s.received, s.sent = info.Bytes_received, info.Bytes_sent
	if info.Unacked > 0 {
		s.ackWait = time.Duration(info.Last_ack_recv) * time.Millisecond
	}
	s.shut = inq > 0 && info.Rcv_wnd < 2*max(info.Rcv_mss, 536)
	s.over = info.State != unix.BPF_TCP_ESTABLISHED
	return s, true
}
