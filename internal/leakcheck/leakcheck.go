// Package leakcheck fails a test whose goroutines outlive it.
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// Check records the number of goroutines now and, when the test and its
// earlier-registered cleanups are done, fails the test if more remain
// after a grace period for exiting goroutines to be reaped. Register it
// before the resources it watches, so their cleanups run first.
func Check(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		// A bound on waiting for exits, not an assertion about speed.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if runtime.NumGoroutine() <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf)
	})
}
