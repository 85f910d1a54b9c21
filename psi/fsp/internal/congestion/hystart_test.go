package congestion

import (
	"testing"
	"time"
)

// windowOf returns the state every controller shares.
func windowOf(c Controller) *window {
	switch c := c.(type) {
	case *cubic:
		return &c.window
	case *reno:
		return &c.window
	}
	panic("unknown controller")
}

// inCSS returns a sim whose controller entered CSS: two rounds at 20 ms,
// one at 30.
func inCSS(t *testing.T, name string, c Controller) (*sim, *window) {
	t.Helper()
	s := newSim(t, c)
	w := windowOf(c)
	s.rounds(2, 20*time.Millisecond)
	s.round(30 * time.Millisecond)
	if !w.hs.css {
		t.Fatalf("%s: no CSS after a 10 ms rise", name)
	}
	return s, w
}

// rounds runs n window-limited round trips at rtt.
func (s *sim) rounds(n int, rtt time.Duration) {
	for range n {
		s.round(rtt)
	}
}

func TestHyStartExitsOnDelayRise(t *testing.T) {
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{}))
		w := windowOf(s.c)
		s.rounds(3, 20*time.Millisecond)
		if w.hs.css {
			t.Fatalf("%s: CSS on a flat round trip", name)
		}
		// 20 ms/8 is below the 4 ms floor: a 5 ms rise is one.
		before := s.c.Window()
		s.round(25 * time.Millisecond)
		if !w.hs.css || !w.inSlowStart() {
			t.Fatalf("%s: css %v, slow start %v after a 5 ms rise", name, w.hs.css, w.inSlowStart())
		}
		// The 8 samples that showed the rise grew the window fully, the
		// rest of the round by a quarter.
		got, want := s.c.Window()-before, 8*mss+(before/mss-8)*mss/4
		if got < want-mss || got > want+mss {
			t.Errorf("%s: the round that entered CSS added %d bytes, want about %d", name, got, want)
		}
		before = s.c.Window()
		s.round(25 * time.Millisecond)
		if got, max := s.c.Window()-before, before/4+mss; got > max {
			t.Errorf("%s: a CSS round added %d bytes to %d, want at most %d", name, got, before, max)
		}
		s.rounds(hystartCSSRounds-1, 25*time.Millisecond)
		if w.inSlowStart() || w.hs.css {
			t.Fatalf("%s: still in slow start (css %v) after %d CSS rounds", name, w.hs.css, hystartCSSRounds)
		}
		if w.ssthresh >= w.maxWindow || s.c.InRecovery() {
			t.Errorf("%s: ssthresh %d, recovery %v: want the window reached, no recovery", name, w.ssthresh, s.c.InRecovery())
		}
		// Congestion avoidance grows slowly from here.
		before = s.c.Window()
		s.round(25 * time.Millisecond)
		if got := s.c.Window() - before; got > before/2 {
			t.Errorf("%s: avoidance round added %d bytes to %d", name, got, before)
		}
	}
}

func TestHyStartFlatRTTStaysInSlowStart(t *testing.T) {
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{}))
		w := windowOf(s.c)
		// Jitter of 3 ms around 1 ms (a loaded host's loopback) is below
		// the 4 ms floor.
		for i := range 8 {
			rtt := time.Millisecond
			if i%2 == 1 {
				rtt += 3 * time.Millisecond
			}
			s.round(rtt)
		}
		if w.hs.css || !w.inSlowStart() {
			t.Fatalf("%s: css %v, slow start %v on a flat round trip", name, w.hs.css, w.inSlowStart())
		}
		if got, want := s.c.Window(), 32*mss<<8; got != want {
			t.Errorf("%s: window %d after 8 rounds, want %d (doubling)", name, got, want)
		}
	}
}

func TestHyStartBackToSlowStart(t *testing.T) {
	for name, mk := range controllers() {
		s, w := inCSS(t, name, mk(Config{}))
		// The next round's RTT falls below the one that began CSS: the rise
		// was jitter.
		s.round(20 * time.Millisecond)
		if w.hs.css || !w.inSlowStart() {
			t.Fatalf("%s: css %v, slow start %v after the RTT fell", name, w.hs.css, w.inSlowStart())
		}
		before := s.c.Window()
		s.round(20 * time.Millisecond)
		if got := s.c.Window(); got != 2*before {
			t.Errorf("%s: window %d after a slow start round from %d, want doubled", name, got, before)
		}
	}
}

func TestHyStartLossEnds(t *testing.T) {
	for name, mk := range controllers() {
		s, w := inCSS(t, name, mk(Config{}))
		cwnd := s.c.Window()
		s.c.OnLoss(s.now, s.send(), mss, cwnd)
		if w.hs.css || w.inSlowStart() || s.c.Window() >= cwnd {
			t.Fatalf("%s: after a loss in CSS: css %v, slow start %v, window %d from %d", name, w.hs.css, w.inSlowStart(), s.c.Window(), cwnd)
		}
		// A timeout's slow start is a standard one, to the threshold the
		// loss set: a rise of the RTT no longer slows it.
		s.c.OnRetransmissionTimeout()
		s.rounds(2, 30*time.Millisecond)
		before := s.c.Window()
		s.round(60 * time.Millisecond)
		if w.hs.css || s.c.Window() != min(2*before, w.ssthresh) && w.inSlowStart() {
			t.Errorf("%s: slow start after a timeout: css %v, window %d from %d", name, w.hs.css, s.c.Window(), before)
		}
	}
}

func TestHyStartThresholdClamp(t *testing.T) {
	for _, tc := range []struct {
		base, rise time.Duration
		css        bool
	}{
		{time.Millisecond, 3900 * time.Microsecond, false}, // floor 4 ms
		{time.Millisecond, 4 * time.Millisecond, true},
		{80 * time.Millisecond, 9 * time.Millisecond, false}, // 80/8 = 10 ms
		{80 * time.Millisecond, 10 * time.Millisecond, true},
		{400 * time.Millisecond, 16 * time.Millisecond, true}, // ceiling 16 ms, not 50
	} {
		s := newSim(t, NewCubic(Config{}))
		s.rounds(2, tc.base)
		s.round(tc.base + tc.rise)
		if got := windowOf(s.c).hs.css; got != tc.css {
			t.Errorf("RTT %v then %v: css %v, want %v", tc.base, tc.base+tc.rise, got, tc.css)
		}
	}
}

// One acknowledgement covering many packets gives one sample, not one
// per packet: eight packets acknowledged at once must not count as the
// eight samples that decide.
func TestHyStartSamplesPerAck(t *testing.T) {
	s := newSim(t, NewCubic(Config{}))
	w := windowOf(s.c)
	s.rounds(2, 20*time.Millisecond)
	n := s.c.Window() / mss
	first := s.pn
	for range n {
		s.send()
	}
	s.now = s.now.Add(40 * time.Millisecond)
	for i := range 4 { // four acknowledgements of 8 packets each
		s.rtt.Update(40*time.Millisecond, 0)
		for pn := first + uint64(8*i); pn < first+uint64(8*i+8); pn++ {
			s.c.OnAck(s.now, pn, mss, s.c.Window(), &s.rtt)
		}
	}
	if w.hs.samples != 4 || w.hs.css {
		t.Fatalf("after 4 acknowledgements of 8 packets: %d samples, css %v; want 4, false", w.hs.samples, w.hs.css)
	}
}

func TestHyStartPacingGain(t *testing.T) {
	s, _ := inCSS(t, "cubic", NewCubic(Config{}))
	want := 1.25 * float64(s.c.Window()) / s.rtt.SmoothedRTT().Seconds()
	if got := s.c.PacingRate(&s.rtt); got != want {
		t.Errorf("CSS pacing rate %.0f, want %.0f (gain 1.25)", got, want)
	}
}
