package psitest

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestProgressContext: the context streamLarge reads under ends once no
// byte arrived for the stall limit, however long the transfer ran before.
func TestProgressContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		ctx := ProgressContext(t, &n, 30*time.Second)
		for range 10 { // 5 minutes, moving
			time.Sleep(29 * time.Second)
			n.Add(1)
			synctest.Wait()
			if ctx.Err() != nil {
				t.Fatalf("ended while moving: %v", context.Cause(ctx))
			}
		}
		time.Sleep(32 * time.Second)
		synctest.Wait() // the watcher's last tick ran
		if ctx.Err() == nil {
			t.Fatal("still running 32 s after the last byte")
		}
		t.Log(context.Cause(ctx))
	})
}
