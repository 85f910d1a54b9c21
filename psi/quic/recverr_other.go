//go:build !linux

package quic

import "net"

// setRecvErr is a no-op where ICMP errors cannot be requested; a dial to a
// closed port then fails with the handshake timeout.
func setRecvErr(net.PacketConn, bool) {}
