package fsp

import (
	"testing"
	"time"
)

// TestIdleDecide: the idle timeout discounts the timer's lateness and
// waits while input waits unread, never past twice the timeout.
func TestIdleDecide(t *testing.T) {
	const idle = 30 * time.Second
	s := time.Second
	for _, c := range []struct {
		name                string
		silent, grace, late time.Duration
		waiting             bool
		wantGrace           time.Duration
		wantDead            bool
	}{
		{"quiet", 10 * s, 0, 0, false, 0, false},
		{"silent", idle, 0, 0, false, 0, true},
		{"on time", idle, 0, idleLateSlack, false, 0, true},
		{"late", idle + 4*s, 0, 5*s + idleLateSlack, false, 5 * s, false},
		{"late, then silent", idle + 5*s, 5 * s, 0, false, 5 * s, true},
		{"input waits", idle, 0, 0, true, idle / idleWaitDiv, false},
		{"input waits again", idle + s, s, 0, true, 2 * s, false},
		{"late past the bound", 2*idle - s, 0, idle + s, false, idle, false},
		{"bound", 2 * idle, idle, 0, true, idle, true},
		{"bound, late", 2 * idle, 0, idle * 3, true, idle, true},
		{"waits near the bound", 2*idle - s/2, idle - s, 0, true, idle, false},
	} {
		grace, dead := idleDecide(c.silent, idle, c.grace, c.late, c.waiting)
		if grace != c.wantGrace || dead != c.wantDead {
			t.Errorf("%s: grace %v dead %v, want %v %v", c.name, grace, dead, c.wantGrace, c.wantDead)
		}
	}
}

// TestIdleReaderStarved: a connection whose socket reader is held for
// longer than IdleTimeout, while the peer keeps sending keep-alives that
// pile up unread, survives: the silence was ours, not the peer's. Before,
// it was declared dead ("peer silent") once its timer fired, as in
// TestManyDials' starved listener. (That a peer really gone is still
// declared dead, within twice the timeout, is TestIdleDecide's.)
func TestIdleReaderStarved(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.IdleTimeout, ccfg.IdleTimeout = 2*time.Second, 2*time.Second
	scfg.KeepAlive, ccfg.KeepAlive = 100*time.Millisecond, 100*time.Millisecond
	st := &Transport{Conn: mustUDP(t)}
	c, s, _ := pairOver(t, st, &Transport{Conn: mustUDP(t)}, scfg, ccfg)
	release := make(chan struct{})
	hold := func() { <-release }
	st.readHook.Store(&hold)
	time.Sleep(2500 * time.Millisecond) // past the 2 s timeout, well short of 4 s
	serr := s.Err()
	st.readHook.Store(nil)
	close(release)
	if serr != nil {
		t.Fatalf("listener's connection died while its reader was held and the peer sent: %v", serr)
	}
	time.Sleep(300 * time.Millisecond)
	if c.Err() != nil || s.Err() != nil {
		t.Fatalf("connection died after the reader went on: %v %v", c.Err(), s.Err())
	}
}
