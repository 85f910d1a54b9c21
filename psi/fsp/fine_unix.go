//go:build linux || darwin || freebsd

package fsp

import (
	"syscall"
	"time"
)

// fineSleep sleeps d in the kernel, which keeps microseconds, not in the
// runtime's poller, which rounds up to a millisecond.
func fineSleep(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Nanosleep(&ts, nil)
}
