//go:build !linux

package sockio

import "net"

// newBatchConn returns nil: batched I/O is implemented for Linux only.
func newBatchConn(*net.UDPConn) Conn { return nil }
