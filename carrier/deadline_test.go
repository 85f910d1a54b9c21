package carrier

import (
	"testing"
	"time"
)

// TestDeadlineMovedAsItFires: a deadline moved (here to none) just as its
// old timer fires stays open. The old timer's function closed the channel
// it shares with the new deadline, so a Write after SetDeadline(time.Time{})
// failed with a timeout and a Read spun (nettest's ConcurrentMethods on
// QUIC, once under load).
func TestDeadlineMovedAsItFires(t *testing.T) {
	for range 20 {
		d := newDeadline()
		d.set(time.Now().Add(time.Millisecond))
		d.mu.Lock()
		time.Sleep(10 * time.Millisecond) // the timer fires and waits for mu
		d.setLocked(time.Time{})
		d.mu.Unlock()
		time.Sleep(5 * time.Millisecond) // the old timer's function runs
		if err := d.ctx().Err(); err != nil {
			t.Fatalf("no deadline, but its context ended: %v", err)
		}
	}
}
