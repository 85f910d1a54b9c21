package fsp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// setRecvErr turns on or off the reporting of ICMP errors on an
// unconnected UDP socket. While on, an ICMP port unreachable for a packet
// we sent makes the next receive fail with ECONNREFUSED, which ends a
// handshake to a closed port at once instead of after the handshake
// timeout. It is only on for a socket FSP owns for a dial: after the
// handshake, ICMP errors are SoftError events (Transport.icmpErrors) and
// must not end the connection.
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

// icmpError is one ICMP error queued on a socket with IP_RECVERR: the
// destination of the datagram that provoked it, and the error.
type icmpError struct {
	dst   netip.AddrPort
	errno syscall.Errno
}

// maxICMPDrain bounds the errors one drain reads.
const maxICMPDrain = 64

// drainICMP reads the socket's error queue (MSG_ERRQUEUE) without
// blocking. The queue holds receive-buffer memory until it is read, so
// a socket with IP_RECVERR on must drain it.
func drainICMP(pc net.PacketConn) []icmpError {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	var out []icmpError
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		oob := make([]byte, 512)
		for range maxICMPDrain {
			_, oobn, _, from, err := unix.Recvmsg(int(fd), b[:], oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				return // EAGAIN: the queue is empty
			}
			e := icmpError{dst: sockaddrAddrPort(from)}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				if (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR ||
					m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR) &&
					len(m.Data) >= 4 {
					// struct sock_extended_err begins with ee_errno.
					e.errno = syscall.Errno(binary.NativeEndian.Uint32(m.Data))
				}
			}
			out = append(out, e)
		}
	})
	return out
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
