package tcp_test

import (
	"context"
	"testing"
	"time"
)

// TestCloseAfterWriteTakesARoundTrip: Close right after a small write, to
// a peer that reads, takes about a round trip (docs/design.md, Close), not
// the peer kernel's delayed-ACK timer (40 ms at least on Linux): the
// reader acknowledges at once when it has read everything (quickAck).
func TestCloseAfterWriteTakesARoundTrip(t *testing.T) {
	var worst time.Duration
	for range 5 {
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
		worst = max(worst, time.Since(start))
		s.Close()
	}
	// Below the 40 ms delayed-ACK floor, with room for a loaded machine.
	if worst > 30*time.Millisecond {
		t.Fatalf("Close after a write took up to %v on loopback", worst)
	}
}
