package tcp_test

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestCloseAfterWriteTakesARoundTrip: Close right after a small write, to
// a peer that reads, takes about a round trip (docs/design.md, Close), not
// the peer kernel's delayed-ACK timer (40 ms at least on Linux): the
// reader acknowledges at once when it has read everything (quickAck).
// The timer would slow every Close; a loaded host that is late to run the
// reader slows some (the worst of 5 took 32 ms in 1 of 25 -race runs), so
// the median of 9 is checked.
func TestCloseAfterWriteTakesARoundTrip(t *testing.T) {
	var took []time.Duration
	for range 9 {
		c, s := pair(t)
		go func() {
			buf := make([]byte, 64)
			for {
				if _, _, err := s.ReadMessage(context.Background(), buf); err != nil {
					return
				}
			}
		}()
		ctx := context.Background()
		if err := c.WriteMessage(ctx, []byte("req"), true, nil); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		s.Close()
	}
	slices.Sort(took)
	// Below the 40 ms delayed-ACK floor, with room for a loaded machine.
	if med := took[len(took)/2]; med > 30*time.Millisecond {
		t.Fatalf("Close after a write took %v (median), %v at worst on loopback", med, took[len(took)-1])
	}
}
