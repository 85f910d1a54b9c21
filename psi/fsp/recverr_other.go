//go:build !linux

package fsp

import (
	"net"
	"net/netip"
	"syscall"
)

// setRecvErr is a no-op where ICMP errors cannot be requested; a dial to a
// closed port then ends at the handshake timeout.
func setRecvErr(net.PacketConn, bool) bool { return false }

type icmpError struct {
	dst   netip.AddrPort
	errno syscall.Errno
}

func drainICMP(net.PacketConn) []icmpError { return nil }
