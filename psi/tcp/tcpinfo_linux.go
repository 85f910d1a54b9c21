//go:build linux

package tcp

import (
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// fillPathInfo adds the kernel's TCP_INFO estimates to p.
func fillPathInfo(c *net.TCPConn, p *post.Path) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || info == nil {
		return
	}
	p.RTT = time.Duration(info.Rtt) * time.Microsecond
	p.RTTVar = time.Duration(info.Rttvar) * time.Microsecond
	p.MTU = int(info.Pmtu)
	p.Rate = float64(info.Delivery_rate)
	if info.Segs_out > 0 {
		p.Loss = min(1, float64(info.Total_retrans)/float64(info.Segs_out))
	}
}

// backoff returns the kernel's retransmission backoff (TCP_INFO's
// tcpi_backoff: retransmission timeouts in a row); false once the socket
// is gone.
func backoff(c *net.TCPConn) (uint8, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil || info == nil {
		return 0, false
	}
	return info.Backoff, true
}

// fillStats copies the kernel's TCP_INFO counters into s.
func fillStats(c *net.TCPConn, s *psi.TransientStats) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || info == nil {
		return
	}
	s.PacketsSent, s.PacketsReceived = uint64(info.Segs_out), uint64(info.Segs_in)
	s.Retransmissions, s.PacketsLost = uint64(info.Total_retrans), uint64(info.Lost)
	s.BytesSent, s.BytesReceived = info.Bytes_sent, info.Bytes_received
	s.SmoothedRTT = time.Duration(info.Rtt) * time.Microsecond
	s.RTTVar = time.Duration(info.Rttvar) * time.Microsecond
	s.MinRTT = time.Duration(info.Min_rtt) * time.Microsecond
	s.CongestionWindow = int(info.Snd_cwnd) * int(info.Snd_mss)
}
