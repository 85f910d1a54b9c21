//go:build !linux

package tcp

import (
	"syscall"
	"time"
)

// deferAccept does nothing where TCP_DEFER_ACCEPT is not available.
func deferAccept(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
