package fsp

import (
	"testing"
	"time"
)

// TestKeepAliveProbe: silence is probed by the first keep-alive tick
// half an interval after the last packet, so a tick just short of a full
// interval does not leave the connection silent for two (before, with a
// 1 s idle timeout and its 500 ms interval, a tick at 499 ms skipped the
// probe and the next came as the timeout struck: TestPeerDeadTimeout
// failed in CI).
func TestKeepAliveProbe(t *testing.T) {
	const ka = 500 * time.Millisecond
	last := time.Unix(1000, 0)
	for _, c := range []struct {
		since time.Duration
		want  bool
	}{{0, false}, {ka/2 - time.Millisecond, false}, {ka / 2, true}, {ka - time.Millisecond, true}, {ka, true}} {
		if got := keepAliveProbe(last.Add(c.since), last, ka); got != c.want {
			t.Errorf("tick %v after the last packet: probe %v, want %v", c.since, got, c.want)
		}
	}
}
