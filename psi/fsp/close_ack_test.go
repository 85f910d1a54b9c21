package fsp

import (
	"io"
	"testing"
	"time"
)

// TestCloseAckLeavesBeforeSocket closes a connection whose peer released
// it while the connection loop, which builds the acknowledgement of that
// RELEASE with c.mu held, is slow to send it, and then closes the
// listener's socket at once, as a process that exits after Close does
// (in-process, time-wait keeps the socket open, which hid this).
// Close must not return before that acknowledgement left, or the peer's
// Close waits out its linger and fails with post.ErrTimeout though
// everything arrived (found across processes on a loaded host).
func TestCloseAckLeavesBeforeSocket(t *testing.T) {
	for i := range 3 {
		scfg, ccfg := pair(t)
		// The linger bounds the failure: a Close without the
		// acknowledgement waits it out, one with it takes a round trip.
		ccfg.Linger = 5 * time.Second
		l := listen(t, scfg)
		slow := func() { time.Sleep(20 * time.Millisecond) }
		l.Transport().sendHook.Store(&slow)
		c, s := connect(t, l, ccfg)
		ctx := testContext(t)
		if err := c.SendMessage(ctx, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		if b, err := s.ReceiveMessage(ctx); err != nil || string(b) != "hello" {
			t.Fatalf("%d: receive: %q %v", i, b, err)
		}
		if _, _, err := s.ReadMessage(ctx, make([]byte, 10)); err != io.EOF {
			t.Fatalf("%d: want io.EOF after RELEASE, got %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("%d: server close: %v", i, err)
		}
		// Exit: the socket goes at once, time-wait or not.
		l.Transport().Close()
		if err := <-closed; err != nil {
			t.Fatalf("%d: client close after the peer had everything: %v", i, err)
		}
	}
}
