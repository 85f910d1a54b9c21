package congestion

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

const mss = DefaultMSS

// sim drives a Controller with a simulated clock over a path with a fixed
// round-trip time.
type sim struct {
	t   *testing.T
	c   Controller
	rtt RTTStats
	now time.Time
	pn  uint64
}

func newSim(t *testing.T, c Controller) *sim {
	return &sim{t: t, c: c, now: time.Unix(1000, 0)}
}

// round sends a full window and has every packet acknowledged one round
// trip later, the acknowledgements spread evenly over the next round trip.
// The sender is window limited: it refills the window on every
// acknowledgement, so a full window is in flight before each one.
// It returns the packet numbers sent.
func (s *sim) round(rtt time.Duration) (first, last uint64) {
	n := s.c.Window() / mss
	first = s.pn
	inFlight := 0
	for range n {
		inFlight += mss
		s.c.OnPacketSent(s.now, s.pn, mss, inFlight)
		s.pn++
	}
	last = s.pn - 1
	step := rtt / time.Duration(n)
	for pn := first; pn <= last; pn++ {
		s.now = s.now.Add(step)
		s.rtt.Update(rtt, 0)
		s.c.OnAck(s.now, pn, mss, s.c.Window(), &s.rtt)
	}
	return first, last
}

// send sends one packet without acknowledging it and returns its number.
func (s *sim) send() uint64 {
	s.c.OnPacketSent(s.now, s.pn, mss, s.c.Window())
	s.pn++
	return s.pn - 1
}

func controllers() map[string]func(Config) Controller {
	return map[string]func(Config) Controller{"newreno": NewReno, "cubic": NewCubic}
}

func TestDefaults(t *testing.T) {
	for name, mk := range controllers() {
		c := mk(Config{})
		if got, want := c.Window(), 32*1400; got != want {
			t.Errorf("%s: initial window %d, want %d", name, got, want)
		}
		if !c.CanSend(0) || !c.CanSend(c.Window()-1) || c.CanSend(c.Window()) {
			t.Errorf("%s: CanSend wrong around window %d", name, c.Window())
		}
		if c.InRecovery() {
			t.Errorf("%s: in recovery at start", name)
		}
	}
}

func TestNew(t *testing.T) {
	for _, name := range []string{"", "cubic", "newreno", "reno"} {
		if _, err := New(name, Config{}); err != nil {
			t.Errorf("New(%q): %v", name, err)
		}
	}
	if _, err := New("bbr", Config{}); !errors.Is(err, post.ErrNotSupported) {
		t.Errorf("New(bbr) error %v, want ErrNotSupported", err)
	}
}

func TestSlowStartDoubles(t *testing.T) {
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{}))
		w := s.c.Window()
		for i := range 5 {
			s.round(50 * time.Millisecond)
			if got := s.c.Window(); got != 2*w {
				t.Fatalf("%s: round %d window %d, want %d", name, i, got, 2*w)
			}
			w *= 2
		}
	}
}

func TestNoGrowthWhenAppLimited(t *testing.T) {
	for name, mk := range controllers() {
		c := mk(Config{})
		w := c.Window()
		now := time.Unix(0, 0)
		for pn := range uint64(100) {
			c.OnPacketSent(now, pn, mss, mss)
			c.OnAck(now, pn, mss, mss, nil) // one packet in flight
		}
		if c.Window() != w {
			t.Errorf("%s: window grew to %d while app limited", name, c.Window())
		}
	}
}

func TestMaxWindow(t *testing.T) {
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{MaxWindow: 100 * mss}))
		for range 10 {
			s.round(10 * time.Millisecond)
		}
		if got := s.c.Window(); got != 100*mss {
			t.Errorf("%s: window %d, want cap %d", name, got, 100*mss)
		}
	}
}

func TestLossReduction(t *testing.T) {
	for name, want := range map[string]float64{"newreno": 0.5, "cubic": 0.7} {
		s := newSim(t, controllers()[name](Config{InitialWindowPackets: 100}))
		before := s.c.Window()
		a, b, c := s.send(), s.send(), s.send()
		s.c.OnLoss(s.now, a, mss, before)
		after := s.c.Window()
		if got := float64(after) / float64(before); math.Abs(got-want) > 0.01 {
			t.Errorf("%s: loss scaled window by %.3f, want %.2f", name, got, want)
		}
		if !s.c.InRecovery() {
			t.Errorf("%s: not in recovery after loss", name)
		}
		// Losses of packets sent before the epoch began are the same event.
		s.c.OnLoss(s.now, c, mss, before)
		s.c.OnLoss(s.now, b, mss, before)
		if s.c.Window() != after {
			t.Errorf("%s: second loss in epoch changed window %d -> %d", name, after, s.c.Window())
		}
		// No growth in recovery from acks of old packets.
		d := s.send()
		s.c.OnAck(s.now, b, mss, after, nil)
		if s.c.Window() != after || !s.c.InRecovery() {
			t.Errorf("%s: ack of old packet: window %d recovery %v", name, s.c.Window(), s.c.InRecovery())
		}
		// A loss of a packet sent after the epoch began is a new event.
		s.c.OnLoss(s.now, d, mss, after)
		if got := float64(s.c.Window()) / float64(after); math.Abs(got-want) > 0.01 {
			t.Errorf("%s: new-epoch loss scaled window by %.3f, want %.2f", name, got, want)
		}
		// An ack of a packet sent after that ends recovery.
		e := s.send()
		s.c.OnAck(s.now, e, mss, s.c.Window(), nil)
		if s.c.InRecovery() {
			t.Errorf("%s: still in recovery after ack of new packet", name)
		}
		// A late loss report from before the epoch does not reduce again.
		w := s.c.Window()
		s.c.OnLoss(s.now, a, mss, w)
		if s.c.Window() != w || s.c.InRecovery() {
			t.Errorf("%s: late loss of old packet reduced window %d -> %d", name, w, s.c.Window())
		}
	}
}

func TestLossFloor(t *testing.T) {
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{InitialWindowPackets: 2}))
		for range 5 {
			s.c.OnLoss(s.now, s.send(), mss, 0)
		}
		if got := s.c.Window(); got != MinWindowPackets*mss {
			t.Errorf("%s: window %d after losses, want floor %d", name, got, MinWindowPackets*mss)
		}
	}
}

func TestRenoCongestionAvoidance(t *testing.T) {
	s := newSim(t, NewReno(Config{InitialWindowPackets: 40}))
	s.c.OnLoss(s.now, s.send(), mss, 0) // window 20 packets, ssthresh 20
	s.send()
	for i := range 10 {
		s.round(20 * time.Millisecond)
		if got, want := s.c.Window(), (21+i)*mss; got != want {
			t.Fatalf("round %d: window %d, want %d (+1 MSS per RTT)", i, got, want)
		}
	}
}

func TestRetransmissionTimeout(t *testing.T) {
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{InitialWindowPackets: 100}))
		s.send()
		s.c.OnRetransmissionTimeout()
		if got := s.c.Window(); got != MinWindowPackets*mss {
			t.Errorf("%s: window %d after RTO, want %d", name, got, MinWindowPackets*mss)
		}
		s.c.OnRetransmissionTimeout() // back to back: ssthresh must not collapse
		// Slow start must run up to the threshold set by the first RTO.
		s.round(10 * time.Millisecond)
		s.round(10 * time.Millisecond)
		s.round(10 * time.Millisecond)
		if got := s.c.Window(); got != 16*mss {
			t.Errorf("%s: window %d after 3 rounds of slow start, want %d", name, got, 16*mss)
		}
		// Losses of packets outstanding at the timeout are not new events.
		w := s.c.Window()
		s.c.OnLoss(s.now, 0, mss, w)
		if s.c.Window() != w {
			t.Errorf("%s: loss of pre-RTO packet reduced window", name)
		}
	}
}

func TestPacingRate(t *testing.T) {
	for name, mk := range controllers() {
		c := mk(Config{})
		var rtt RTTStats
		rtt.Update(50*time.Millisecond, 0)
		want := 2 * float64(c.Window()) / 0.05
		if got := c.PacingRate(&rtt); math.Abs(got-want) > 1 {
			t.Errorf("%s: slow start rate %.0f, want %.0f", name, got, want)
		}
		if got, want := c.PacingRate(nil), 2*float64(c.Window())/InitialRTT.Seconds(); math.Abs(got-want) > 1 {
			t.Errorf("%s: rate with nil rtt %.0f, want %.0f", name, got, want)
		}
		c.OnPacketSent(time.Time{}, 0, mss, mss)
		c.OnLoss(time.Time{}, 0, mss, mss)
		want = 1.25 * float64(c.Window()) / 0.05
		if got := c.PacingRate(&rtt); math.Abs(got-want) > 1 {
			t.Errorf("%s: avoidance rate %.0f, want %.0f", name, got, want)
		}
	}
}

// cubicAfterLoss returns a simulation whose CUBIC controller just reduced
// from a window of wmax packets.
func cubicAfterLoss(t *testing.T, wmax int) *sim {
	s := newSim(t, NewCubic(Config{InitialWindowPackets: wmax}))
	s.c.OnLoss(s.now, s.send(), mss, wmax*mss)
	s.c.OnAck(s.now, s.send(), mss, s.c.Window(), nil) // end recovery
	return s
}

func TestCubicCurve(t *testing.T) {
	const wmax = 1000
	rtt := 100 * time.Millisecond
	s := cubicAfterLoss(t, wmax)
	c := s.c.(*cubic)
	if got := c.Window(); got != 700*mss {
		t.Fatalf("window after loss %d, want %d", got, 700*mss)
	}
	start := s.now
	k := math.Cbrt(wmax * (1 - cubicBeta) / cubicC)
	checks := []float64{2, k / 2, k, k + 2, k + 4}
	for len(checks) > 0 {
		s.round(rtt)
		ts := s.now.Sub(start).Seconds()
		if ts < checks[0] {
			continue
		}
		checks = checks[1:]
		// The epoch begins with the first acknowledgement after recovery,
		// and growth aims one RTT ahead.
		want := cubicC*math.Pow(ts-k, 3) + wmax
		got := float64(c.Window()) / mss
		t.Logf("t=%.2fs: window %.1f packets, W(t) = %.1f", ts, got, want)
		if math.Abs(got-want)/want > 0.02 {
			t.Errorf("t=%.2fs: window %.1f packets, W(t) = %.1f", ts, got, want)
		}
	}
}

func TestCubicRenoFriendly(t *testing.T) {
	const wmax = 20
	rtt := 10 * time.Millisecond
	s := cubicAfterLoss(t, wmax)
	start := s.now
	for s.now.Sub(start) < time.Second {
		s.round(rtt)
	}
	ts := s.now.Sub(start).Seconds()
	k := math.Cbrt(wmax * (1 - cubicBeta) / cubicC)
	curve := cubicC*math.Pow(ts-k, 3) + wmax
	// Reno-friendly estimate: alpha = 0.53 per RTT from 14 to 20 packets,
	// then one packet per RTT.
	rounds := ts / rtt.Seconds()
	toPrior := (wmax - 14) / cubicAlpha
	reno := wmax + (rounds - toPrior)
	got := float64(s.c.Window()) / mss
	if got < 2*curve || math.Abs(got-reno)/reno > 0.1 {
		t.Errorf("window %.1f packets at %.2fs; cubic curve %.1f, Reno estimate %.1f", got, ts, curve, reno)
	}
}

func TestCubicFastConvergence(t *testing.T) {
	s := cubicAfterLoss(t, 100) // Wmax 100, window 70
	c := s.c.(*cubic)
	w := float64(c.Window())
	s.c.OnLoss(s.now, s.send(), mss, 0) // second loss below Wmax
	if want := w * (1 + cubicBeta) / 2; math.Abs(c.wMax-want) > 1 {
		t.Errorf("Wmax %.0f after loss below previous Wmax, want %.0f", c.wMax, want)
	}
	if got, want := c.Window(), int(w*cubicBeta); got != want {
		t.Errorf("window %d, want %d", got, want)
	}
}

func TestCubicAboveWmax(t *testing.T) {
	// Beyond the plateau the curve grows convexly and never stalls.
	s := cubicAfterLoss(t, 50)
	prev := 0
	for range 200 {
		s.round(20 * time.Millisecond)
		if w := s.c.Window(); w < prev {
			t.Fatalf("window shrank %d -> %d without loss", prev, w)
		} else {
			prev = w
		}
	}
	if prev <= 70*mss {
		t.Errorf("window %d packets after 4s, expected growth past Wmax", prev/mss)
	}
}

func TestRTTStats(t *testing.T) {
	var r RTTStats
	if r.SmoothedRTT() != InitialRTT || r.RTTVar() != InitialRTT/2 || r.MinRTT() != 0 || r.LatestRTT() != 0 {
		t.Fatalf("zero value: srtt %v var %v min %v latest %v", r.SmoothedRTT(), r.RTTVar(), r.MinRTT(), r.LatestRTT())
	}
	if got, want := r.RTO(), 300*time.Millisecond; got != want {
		t.Errorf("initial RTO %v, want %v", got, want)
	}
	r.Update(100*time.Millisecond, 0)
	if r.SmoothedRTT() != 100*time.Millisecond || r.RTTVar() != 50*time.Millisecond {
		t.Errorf("first sample: srtt %v var %v", r.SmoothedRTT(), r.RTTVar())
	}
	r.Update(180*time.Millisecond, 40*time.Millisecond) // adjusted to 140 ms
	if got, want := r.SmoothedRTT(), 105*time.Millisecond; got != want {
		t.Errorf("srtt %v, want %v", got, want)
	}
	if got, want := r.RTTVar(), 47500*time.Microsecond; got != want {
		t.Errorf("rttvar %v, want %v", got, want)
	}
	if r.MinRTT() != 100*time.Millisecond || r.LatestRTT() != 180*time.Millisecond {
		t.Errorf("min %v latest %v", r.MinRTT(), r.LatestRTT())
	}
	// Ack delay that would go below min RTT is not subtracted.
	r.Update(110*time.Millisecond, 50*time.Millisecond)
	if got, want := r.SmoothedRTT(), 105*time.Millisecond+(110-105)*time.Millisecond/8; got != want {
		t.Errorf("srtt %v, want %v", got, want)
	}
	r.Update(-time.Second, 0)
	r.Update(0, 0)
	if r.LatestRTT() != 110*time.Millisecond {
		t.Errorf("non-positive sample was used")
	}
}

func TestRTTMaxAckDelay(t *testing.T) {
	var r RTTStats
	r.SetMaxAckDelay(10 * time.Millisecond)
	r.Update(100*time.Millisecond, 0)
	r.Update(200*time.Millisecond, 80*time.Millisecond) // delay capped to 10 ms
	if got, want := r.SmoothedRTT(), 100*time.Millisecond+90*time.Millisecond/8; got != want {
		t.Errorf("srtt %v, want %v", got, want)
	}
	if got, want := r.RTO(), r.SmoothedRTT()+4*r.RTTVar()+10*time.Millisecond; got != want {
		t.Errorf("RTO %v, want %v", got, want)
	}
}

func TestRTOBackoff(t *testing.T) {
	var r RTTStats
	r.Update(100*time.Millisecond, 0)
	base := r.RTO()
	if base != 300*time.Millisecond {
		t.Fatalf("RTO %v, want 300ms", base)
	}
	for i := 1; i <= 4; i++ {
		r.Backoff()
		if got, want := r.RTO(), base<<i; got != want {
			t.Errorf("after %d backoffs RTO %v, want %v", i, got, want)
		}
	}
	if r.Backoffs() != 4 {
		t.Errorf("Backoffs %d, want 4", r.Backoffs())
	}
	for range 100 {
		r.Backoff()
	}
	if r.RTO() != MaxRTO {
		t.Errorf("RTO %v after many backoffs, want cap %v", r.RTO(), MaxRTO)
	}
	r.Update(100*time.Millisecond, 0)
	if r.Backoffs() != 0 || r.RTO() > base {
		t.Errorf("sample did not reset backoff: %d, RTO %v", r.Backoffs(), r.RTO())
	}
}

func TestRTOFloor(t *testing.T) {
	var r RTTStats
	for range 50 {
		r.Update(time.Millisecond, 0)
	}
	if r.RTO() != MinRTO {
		t.Errorf("RTO %v on a 1 ms path, want floor %v", r.RTO(), MinRTO)
	}
}

func TestPTO(t *testing.T) {
	var r RTTStats
	if got, want := r.PTO(), 300*time.Millisecond; got != want {
		t.Errorf("initial PTO %v, want %v", got, want)
	}
	r.SetMaxAckDelay(time.Millisecond)
	for range 50 {
		r.Update(500*time.Microsecond, 0)
	}
	// 0.5 ms + max(4*var, 1 ms) + 1 ms ack delay, no 200 ms floor.
	want := r.SmoothedRTT() + max(4*r.RTTVar(), time.Millisecond) + time.Millisecond
	if got := r.PTO(); got != want || got > 3*time.Millisecond {
		t.Errorf("PTO %v on a 0.5 ms path, want %v", got, want)
	}
	if r.RTO() != MinRTO {
		t.Errorf("RTO %v, want the default floor %v", r.RTO(), MinRTO)
	}
	r.Backoff()
	r.Backoff()
	if got := r.PTO(); got != 4*want {
		t.Errorf("PTO %v after two backoffs, want %v", got, 4*want)
	}
	for range 100 {
		r.Backoff()
	}
	if r.PTO() != MaxRTO {
		t.Errorf("PTO %v after many backoffs, want cap %v", r.PTO(), MaxRTO)
	}
}

func TestSetMinRTO(t *testing.T) {
	var r RTTStats
	for range 50 {
		r.Update(time.Millisecond, 0)
	}
	if r.MinRTOFloor() != MinRTO {
		t.Fatalf("default floor %v", r.MinRTOFloor())
	}
	r.SetMinRTO(20 * time.Millisecond)
	if r.RTO() != 20*time.Millisecond || r.MinRTOFloor() != 20*time.Millisecond {
		t.Errorf("RTO %v with a 20 ms floor", r.RTO())
	}
	r.Backoff()
	if r.RTO() != 40*time.Millisecond {
		t.Errorf("RTO %v after a backoff, want 40ms", r.RTO())
	}
	r.Update(time.Millisecond, 0)
	r.SetMinRTO(time.Microsecond) // raised to the granularity
	if got, want := r.RTO(), r.PTO(); got != want {
		t.Errorf("RTO %v with the lowest floor, want PTO %v", got, want)
	}
	r.SetMinRTO(0)
	if r.RTO() != MinRTO {
		t.Errorf("RTO %v after restoring the default, want %v", r.RTO(), MinRTO)
	}
}

// TestLossReducesWindowInUse has a sender held by its peer's receive
// window to a tenth of its congestion window: a loss must bring the
// window below what was in flight, or the sender keeps its rate through
// every loss (and crowds out flows that back off).
func TestLossReducesWindowInUse(t *testing.T) {
	for name, beta := range map[string]float64{"newreno": 0.5, "cubic": 0.7} {
		c := controllers()[name](Config{InitialWindowPackets: 1000})
		const flight = 100 * mss
		now := time.Unix(0, 0)
		for pn := range uint64(300) {
			c.OnPacketSent(now, pn, mss, flight) // receive-window limited
		}
		c.OnLoss(now, 0, mss, flight-mss)
		if got, want := c.Window(), int(beta*flight); math.Abs(float64(got-want)) > mss {
			t.Errorf("%s: window %d after a loss with %d of %d in flight, want %d", name, got, flight, 1000*mss, want)
		}
		if c.CanSend(flight - mss) {
			t.Errorf("%s: may still send with the old flight", name)
		}
	}
}

// TestLossCountsWindowInUse: the window counts as used when the flight
// was within a few packets of it (pacing leaves such gaps), when the
// flight before the acknowledgement that revealed the loss filled it
// (the send-time count restarts at every reduction), and when nothing
// says how much was in flight.
func TestLossCountsWindowInUse(t *testing.T) {
	for name, beta := range map[string]float64{"newreno": 0.5, "cubic": 0.7} {
		mk := controllers()[name]
		c := mk(Config{InitialWindowPackets: 100})
		w := c.Window()
		c.OnPacketSent(time.Time{}, 1, mss, w-2*mss) // paced: a gap of two packets
		c.OnLoss(time.Time{}, 1, mss, 0)
		if got, want := c.Window(), int(beta*float64(w)); math.Abs(float64(got-want)) > 1 {
			t.Errorf("%s: pacing gap: window %d, want %d", name, got, want)
		}
		c = mk(Config{InitialWindowPackets: 100})
		c.OnPacketSent(time.Time{}, 1, mss, mss)
		c.OnLoss(time.Time{}, 1, mss, w)
		if got, want := c.Window(), int(beta*float64(w)); math.Abs(float64(got-want)) > 1 {
			t.Errorf("%s: full prior flight: window %d, want %d", name, got, want)
		}
		c = mk(Config{InitialWindowPackets: 100})
		c.OnLoss(time.Time{}, 1, mss, 0)
		if got, want := c.Window(), int(beta*float64(w)); math.Abs(float64(got-want)) > 1 {
			t.Errorf("%s: unknown flight: window %d, want %d", name, got, want)
		}
	}
}

// TestCubicWmaxFromWindowInUse: the curve's plateau is the window in
// use, not an unused one, so growth after the loss does not race back
// to a window the path never carried.
func TestCubicWmaxFromWindowInUse(t *testing.T) {
	c := NewCubic(Config{InitialWindowPackets: 1000}).(*cubic)
	for pn := range uint64(10) {
		c.OnPacketSent(time.Time{}, pn, mss, 100*mss)
	}
	c.OnLoss(time.Time{}, 0, mss, 100*mss)
	if got, want := c.wMax, float64(100*mss); got != want {
		t.Errorf("Wmax %.0f, want %.0f (the flight, not the unused window)", got, want)
	}
}

// TestPacedSenderIsWindowLimited: a paced sender's flight dips a few
// packets below the window between acknowledgements, but it fills the
// window once a round: the window grows. One that never comes within
// those packets of it in a round (held by its peer or its application)
// does not grow.
func TestPacedSenderIsWindowLimited(t *testing.T) {
	for name, mk := range controllers() {
		for _, fill := range []bool{true, false} {
			c := mk(Config{InitialWindowPackets: 100})
			now := time.Unix(1000, 0)
			c.OnPacketSent(now, 0, mss, c.Window())
			c.OnLoss(now, 0, mss, c.Window()) // congestion avoidance
			var rtt RTTStats
			rtt.Update(10*time.Millisecond, 0)
			w0, pn := 0, uint64(1)
			for r := range 22 {
				if r == 2 { // the rounds of the loss above are over
					w0 = c.Window()
				}
				n, first := c.Window()/mss, pn
				for i := range n {
					inFlight := min((i+1)*mss, c.Window()-6*mss)
					if fill && i == n-1 {
						inFlight = c.Window() // the last of the round fills it
					}
					c.OnPacketSent(now, pn, mss, inFlight)
					pn++
				}
				for q := first; q < pn; q++ {
					now = now.Add(rtt.SmoothedRTT() / time.Duration(n))
					c.OnAck(now, q, mss, c.Window()-6*mss, &rtt) // paced: 6 packets short
				}
			}
			if grew := c.Window() > w0; grew != fill {
				t.Errorf("%s: window filled once a round %v: window %d -> %d", name, fill, w0, c.Window())
			}
		}
	}
}

// TestSmallLossWeight: a lost packet weighs as its size (RFC 7141):
// losses of small packets start a congestion event only once their
// bytes add up to one MSS, a full-size loss (or one of unknown size)
// at once, and a timeout starts the count again.
func TestSmallLossWeight(t *testing.T) {
	const small = mss / 5
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{InitialWindowPackets: 100}))
		w := s.c.Window()
		for i := range 4 {
			s.c.OnLoss(s.now, s.send(), small, w)
			if s.c.Window() != w || s.c.InRecovery() {
				t.Fatalf("%s: loss %d of a %d-byte packet reduced the window %d -> %d", name, i+1, small, w, s.c.Window())
			}
		}
		s.c.OnLoss(s.now, s.send(), small, w)
		if s.c.Window() >= w || !s.c.InRecovery() {
			t.Fatalf("%s: five fifths of an MSS lost left the window at %d", name, s.c.Window())
		}
		for _, size := range []int{mss, 0, 2 * mss} {
			e := s.send()
			s.c.OnAck(s.now, e, mss, s.c.Window(), nil) // ends recovery
			w = s.c.Window()
			s.c.OnLoss(s.now, s.send(), size, w)
			if s.c.Window() >= w {
				t.Errorf("%s: a loss weighing %d bytes left the window at %d", name, size, w)
			}
		}
		// Small losses before a timeout do not count after it.
		e := s.send()
		s.c.OnAck(s.now, e, mss, s.c.Window(), nil)
		s.c.OnLoss(s.now, s.send(), 4*small, s.c.Window())
		s.c.OnRetransmissionTimeout()
		e = s.send()
		s.c.OnAck(s.now, e, mss, s.c.Window(), nil)
		w = s.c.Window()
		s.c.OnLoss(s.now, s.send(), small, w)
		if s.c.Window() != w {
			t.Errorf("%s: a small loss after a timeout reduced the window %d -> %d", name, w, s.c.Window())
		}
	}
}

// TestRandomLossReduction: a loss with the flow's queue nearly empty (the
// round trip at its minimum) keeps more of the window than one with the
// queue full (the round trip doubled), which gets the full reduction.
func TestRandomLossReduction(t *testing.T) {
	for name, want := range map[string][2]float64{"newreno": {0.8, 0.5}, "cubic": {randomLossBeta, cubicBeta}} {
		for i, queued := range []time.Duration{0, 20 * time.Millisecond} {
			s := newSim(t, controllers()[name](Config{InitialWindowPackets: 100}))
			s.c.OnLoss(s.now, s.send(), mss, s.c.Window()) // out of slow start
			s.rtt.Update(20*time.Millisecond, 0)
			s.rtt.Update(20*time.Millisecond+queued, 0)
			a := s.send()
			s.c.OnAck(s.now, a, mss, s.c.Window(), &s.rtt)
			before := s.c.Window()
			s.c.OnLoss(s.now, s.send(), mss, before)
			if got := float64(s.c.Window()) / float64(before); math.Abs(got-want[i]) > 0.01 {
				t.Errorf("%s, %v queued: loss scaled window by %.3f, want %.2f", name, queued, got, want[i])
			}
		}
	}
}

// TestRandomLossQueueEstimate: a few packets' worth of standing queue in
// a large window is a queue; jitter that delays only some packets of a
// round trip is not.
func TestRandomLossQueueEstimate(t *testing.T) {
	s := newSim(t, NewCubic(Config{InitialWindowPackets: 100, MaxWindow: 100 * mss}))
	c := s.c.(*cubic)
	s.c.OnLoss(s.now, s.send(), mss, s.c.Window()) // out of slow start
	s.round(20 * time.Millisecond)
	s.round(20 * time.Millisecond)
	if !c.queueEmpty() {
		t.Fatal("no queueing taken for a queue")
	}
	// 1 ms more on every packet of two round trips: about 4.8 of 100
	// packets queued.
	s.round(21 * time.Millisecond)
	s.round(21 * time.Millisecond)
	if c.queueEmpty() {
		t.Fatal("a standing queue of about 5 packets taken for an empty queue")
	}
	// Jitter: most samples 6 ms late, but not all.
	for range 2 {
		first, last := s.round(26 * time.Millisecond)
		s.rtt.Update(20*time.Millisecond, 0)
		s.c.OnAck(s.now, (first+last)/2, 0, s.c.Window(), &s.rtt)
	}
	if !c.queueEmpty() {
		t.Fatal("jitter taken for a queue")
	}
}

// TestRandomLossSlowStart: in slow start every loss gets the full
// reduction, the queue estimate lagging the round trip's doubling.
func TestRandomLossSlowStart(t *testing.T) {
	s := newSim(t, NewCubic(Config{}))
	s.round(20 * time.Millisecond)
	before := s.c.Window()
	s.c.OnLoss(s.now, s.send(), mss, before)
	if got := float64(s.c.Window()) / float64(before); math.Abs(got-cubicBeta) > 0.01 {
		t.Fatalf("a loss in slow start scaled the window by %.3f, want %.2f", got, cubicBeta)
	}
}

// TestUndoTimeout: a timeout found spurious gives the window and the
// threshold back, once; not after a congestion event that followed it.
func TestUndoTimeout(t *testing.T) {
	for name, mk := range controllers() {
		s := newSim(t, mk(Config{InitialWindowPackets: 40}))
		s.c.OnLoss(s.now, s.send(), mss, 0)
		e := s.send()
		s.c.OnAck(s.now, e, mss, s.c.Window(), nil)
		w := s.c.Window()
		s.c.OnRetransmissionTimeout()
		s.c.OnRetransmissionTimeout() // back-to-back: one run
		if s.c.Window() != MinWindowPackets*mss {
			t.Fatalf("%s: window %d after the timeout", name, s.c.Window())
		}
		u := s.c.(Undoer)
		if !u.UndoTimeout() || s.c.Window() != w || s.c.InRecovery() {
			t.Fatalf("%s: after the undo window %d (want %d), recovery %v", name, s.c.Window(), w, s.c.InRecovery())
		}
		if u.UndoTimeout() {
			t.Fatalf("%s: undone twice", name)
		}
		// Slow start does not resume: the threshold came back too.
		e = s.send()
		s.c.OnAck(s.now, e, mss, s.c.Window(), nil)
		if got := s.c.Window(); got > w+mss {
			t.Fatalf("%s: window %d after an ack, from %d: slow start", name, got, w)
		}
		// A loss after the timeout is real congestion: no undo.
		s.c.OnRetransmissionTimeout()
		s.c.OnLoss(s.now, s.send(), mss, 0)
		if u.UndoTimeout() {
			t.Fatalf("%s: undone after a congestion event", name)
		}
	}
}

// TestRTTSetInitial: SetInitial stands in for InitialRTT until the first
// sample, which replaces it; after a sample it changes nothing.
func TestRTTSetInitial(t *testing.T) {
	var r RTTStats
	if _, ok := r.Estimate(); ok {
		t.Fatal("an estimate before anything")
	}
	r.SetInitial(20 * time.Millisecond)
	if d, ok := r.Estimate(); !ok || d != 20*time.Millisecond || r.RTTVar() != 10*time.Millisecond || r.HasSample() {
		t.Fatalf("seeded: %v %v var %v sample %v", d, ok, r.RTTVar(), r.HasSample())
	}
	r.Update(40*time.Millisecond, 0)
	if r.SmoothedRTT() != 40*time.Millisecond || r.RTTVar() != 20*time.Millisecond {
		t.Fatalf("first sample: %v var %v", r.SmoothedRTT(), r.RTTVar())
	}
	r.SetInitial(time.Second)
	if r.SmoothedRTT() != 40*time.Millisecond {
		t.Fatalf("SetInitial after a sample: %v", r.SmoothedRTT())
	}
}
