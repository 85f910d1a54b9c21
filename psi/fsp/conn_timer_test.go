package fsp

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestTimerFollowsDeadline: once the deadline that armed the timer is gone
// (everything acknowledged), the timer moves to the next deadline and does
// not wake the loop at the old one.
func TestTimerFollowsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &Conn{state: stateEstablished, lastRecv: time.Now(), lastKA: time.Now(), cfg: &Config{IdleTimeout: time.Hour}}
		c.mu.Lock()
		c.rtoAt = time.Now().Add(2 * time.Millisecond)
		c.armTimer()
		if !c.timerAt.Equal(c.rtoAt) {
			t.Fatalf("timer at %v, want the probe deadline %v", c.timerAt, c.rtoAt)
		}
		old := c.rtoAt
		c.rtoAt = time.Time{} // acknowledged
		c.armTimer()
		at := c.timerAt
		c.mu.Unlock()
		if at.Before(old.Add(time.Minute)) {
			t.Fatalf("timer at %v, not pushed back from %v", at, old)
		}

		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		c.inq.mu.Lock()
		woken := c.inq.timer || c.inq.running
		c.inq.mu.Unlock()
		if woken {
			t.Fatal("the timer woke the loop at a deadline that was gone")
		}

		// An earlier deadline still pulls the timer in.
		c.mu.Lock()
		c.rtoAt = time.Now().Add(time.Millisecond)
		c.armTimer()
		got, want := c.timerAt, c.rtoAt
		c.timer.Stop() // the test's Conn has no loop to run it
		c.mu.Unlock()
		if !got.Equal(want) {
			t.Fatalf("timer at %v, want %v", got, want)
		}
	})
}
