//go:build !linux

package sockio

import "net"

// SetReadBuffer asks for a socket receive buffer of n bytes; it returns
// 0, as the size granted is not known on this platform.
func SetReadBuffer(pc *net.UDPConn, n int) int {
	_ = pc.SetReadBuffer(n)
	return 0
}

// Drops returns 0: the platform does not tell.
func Drops(*net.UDPConn) uint64 { return 0 }

// Backlog returns zeros: the platform does not tell.
func Backlog(*net.UDPConn) (queued, size int, drops uint64) { return 0, 0, 0 }
