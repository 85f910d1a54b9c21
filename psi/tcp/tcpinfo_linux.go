//go:build linux

package tcp

import (
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postsockets/postsockets/post"
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
