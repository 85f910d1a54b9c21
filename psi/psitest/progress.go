package psitest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// ProgressContext returns a context that ends once *n has not changed
// for stall (or after 10 minutes, a trickle), or when t ends; its cause
// says which. A test that waits for work to finish on a loaded host
// bounds its wait by it rather than by a fixed time, a speed assertion:
// it stores its progress (bytes read, messages received) in *n.
func ProgressContext(t testing.TB, n *atomic.Int64, stall time.Duration) context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	go func() {
		tick := time.NewTicker(stall / 30)
		defer tick.Stop()
		start := time.Now()
		last, since := n.Load(), start
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if v := n.Load(); v != last {
					last, since = v, now
				}
				switch {
				case now.Sub(since) > stall:
					cancel(fmt.Errorf("no progress for %v after %d bytes", stall, last))
					return
				case now.Sub(start) > 10*time.Minute:
					cancel(fmt.Errorf("still at %d bytes after 10 minutes", last))
					return
				}
			}
		}
	}()
	return ctx
}
