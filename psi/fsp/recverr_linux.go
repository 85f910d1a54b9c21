package fsp

import (
	"net"

	"golang.org/x/sys/unix"
)

// setRecvErr turns on or off the reporting of ICMP errors on an
// unconnected UDP socket. While on, an ICMP port unreachable for a packet
// we sent makes the next receive fail with ECONNREFUSED, which ends a
// handshake to a closed port at once instead of after the handshake
// timeout. It is only on during a dial's handshake on a socket FSP owns:
// later ICMP errors must not end the connection.
func setRecvErr(pc net.PacketConn, on bool) bool {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return false
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	v := 0
	if on {
		v = 1
	}
	set := false
	_ = rc.Control(func(fd uintptr) {
		// One of the two fails depending on the socket's family.
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, v) == nil {
			set = true
		}
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, v) == nil {
			set = true
		}
	})
	return set
}
