package fsp

import (
	"testing"
	"time"
)

// TestRTTUnknownIsZero: before its first RTT sample a connection reports
// a zero RTT (post.Path: estimates are zero when the stack cannot tell),
// not the 100 ms its timers assume. An accepted connection whose client
// had not yet confirmed reported 100 ms in Stats and Path (postsockets
// recv printed "rtt 100ms" on loopback).
func TestRTTUnknownIsZero(t *testing.T) {
	c := fragConn(t)
	if st := c.Stats(); st.SmoothedRTT != 0 || st.RTTVar != 0 {
		t.Errorf("before a sample: Stats SmoothedRTT %v, RTTVar %v; want 0", st.SmoothedRTT, st.RTTVar)
	}
	if p := (&transient{c: c}).Path(); p.RTT != 0 || p.RTTVar != 0 {
		t.Errorf("before a sample: Path RTT %v, RTTVar %v; want 0", p.RTT, p.RTTVar)
	}
	c.mu.Lock()
	c.rtt.Update(5*time.Millisecond, 0)
	c.mu.Unlock()
	if st := c.Stats(); st.SmoothedRTT != 5*time.Millisecond {
		t.Errorf("after a 5 ms sample: Stats SmoothedRTT %v", st.SmoothedRTT)
	}
}
