package fsp

import (
	"net"

	"golang.org/x/sys/unix"
)

// setNoFragment sets IP_PMTUDISC_PROBE (and its IPv6 twin) on uc: every
// datagram leaves with Don't Fragment, the kernel never fragments one
// locally (a datagram larger than the interface MTU fails with EMSGSIZE)
// and ignores the path MTU that ICMP messages report, so FSP's probes
// measure the path itself (RFC 8899 §3).
func setNoFragment(uc *net.UDPConn) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		// One of the two fails depending on the socket's family; an
		// IPv6 socket carrying IPv4 takes both.
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
	})
}
