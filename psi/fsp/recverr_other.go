//go:build !linux

package fsp

import "net"

// setRecvErr is a no-op where ICMP errors cannot be requested; a dial to a
// closed port then ends at the handshake timeout.
func setRecvErr(net.PacketConn, bool) bool { return false }
