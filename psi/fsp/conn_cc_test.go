package fsp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// TestClonesShareCongestion: a session's clones send through one
// congestion controller per path (issue 15): bulk data on one clone moves
// the window every clone sees, and the bytes in flight add up.
func TestClonesShareCongestion(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	go func() {
		for {
			f, err := s.AcceptFork(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					if _, err := f.ReceiveMessage(ctx); err != nil {
						return
					}
				}
			}()
		}
	}()
	a, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Conn{a, b} {
		x.mu.Lock()
		x.ccLock()
		x.ccUnlock()
		x.mu.Unlock()
	}
	if a.ccs.g != c.ccs.g || b.ccs.g != c.ccs.g || a.ccs.p != b.ccs.p {
		t.Fatal("the clones do not share their session's congestion controller")
	}
	msg := randBytes(64 << 10)
	for range 32 {
		if err := a.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SendMessage(ctx, []byte("small")); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.ccLock()
	total, own := a.ccs.p.inFlight, a.ccs.inFlight
	a.ccUnlock()
	a.mu.Unlock()
	if own > total {
		t.Errorf("clone's bytes in flight %d exceed the path's %d", own, total)
	}
	// Once everything is acknowledged the window stops moving: both see it.
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().BytesInFlight+b.Stats().BytesInFlight > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if wa, wb := a.Stats().CongestionWindow, b.Stats().CongestionWindow; wa != wb || wa == 0 {
		t.Errorf("windows %d and %d: want one shared window", wa, wb)
	}
}

// TestRACKRules: the session-wide loss rules (rackPacket.check).
func TestRACKRules(t *testing.T) {
	t0 := time.Now()
	p := &ccPath{ackedSent: t0.Add(100 * time.Microsecond)}
	asked := rackPacket{sent: t0, asked: true, reo: 50 * time.Microsecond}
	if lost, _ := asked.check(t0.Add(200*time.Microsecond), p); !lost {
		t.Error("an immediate-ack packet sent a window before an acknowledged one is not lost")
	}
	asked.reo = 200 * time.Microsecond
	if lost, at := asked.check(t0.Add(200*time.Microsecond), p); lost || !at.IsZero() {
		t.Error("reordering within the window is taken for a loss")
	}
	other := rackPacket{sent: t0, wait: 2 * time.Millisecond}
	if lost, at := other.check(t0.Add(time.Millisecond), p); lost || !at.Equal(t0.Add(2*time.Millisecond)) {
		t.Errorf("delayed-ack packet: lost %v, check again at %v", lost, at.Sub(t0))
	}
	if lost, _ := other.check(t0.Add(2*time.Millisecond), p); !lost {
		t.Error("delayed-ack packet not lost after its wait")
	}
	if lost, at := (rackPacket{sent: t0, wait: time.Millisecond, bulk: true}).check(t0.Add(time.Second), p); lost || !at.IsZero() {
		t.Error("a bulk connection's packet that did not ask is lost by a sibling's acknowledgement")
	}
	if lost, _ := (rackPacket{sent: t0, asked: true, reo: 50 * time.Microsecond, bulk: true}).check(t0, p); !lost {
		t.Error("a bulk connection's packet that asked is not lost by a sibling's acknowledgement")
	}
	later := rackPacket{sent: t0.Add(time.Millisecond), wait: time.Millisecond}
	if lost, at := later.check(t0.Add(5*time.Millisecond), p); lost || !at.IsZero() {
		t.Error("a packet sent after the newest acknowledged one is lost")
	}
}

// TestRACKReorderJitter: the reordering window of a packet that asked for
// an immediate acknowledgement stays at its floor on a steady path and
// grows with the round trip's variation, up to the round trip: a sibling's
// packet sent 300 µs later and acknowledged first shows the packet lost
// on a steady 50 µs path, not on one whose samples vary as a loaded
// host's loops make them (50 µs to 2 ms).
func TestRACKReorderJitter(t *testing.T) {
	for _, tc := range []struct {
		minRTT, rttvar, rtt, want time.Duration
	}{
		{50 * time.Microsecond, 10 * time.Microsecond, 60 * time.Microsecond, rackWindow},
		{2 * time.Millisecond, 10 * time.Microsecond, 2 * time.Millisecond, 500 * time.Microsecond},
		{50 * time.Microsecond, 300 * time.Microsecond, 800 * time.Microsecond, 600 * time.Microsecond},
		{50 * time.Microsecond, time.Millisecond, 800 * time.Microsecond, 800 * time.Microsecond},
	} {
		if got := rackReorder(tc.minRTT, tc.rttvar, tc.rtt); got != tc.want {
			t.Errorf("rackReorder(%v, %v, %v) = %v, want %v", tc.minRTT, tc.rttvar, tc.rtt, got, tc.want)
		}
	}
	t0 := time.Now()
	e := &reliability.Entry[txData]{SentAt: t0, Sent: true, Value: txData{asked: true}}
	p := &ccPath{ackedSent: t0.Add(300 * time.Microsecond)}
	steady, jittery := &Conn{}, &Conn{}
	for i := range 20 {
		steady.rtt.Update(50*time.Microsecond, 0)
		jittery.rtt.Update([]time.Duration{50 * time.Microsecond, 2 * time.Millisecond}[i%2], 0)
	}
	if lost, _ := steady.rackPacket(e, p).check(t0.Add(time.Millisecond), p); !lost {
		t.Error("steady path: a packet sent 300 µs before one acknowledged is not lost")
	}
	if lost, _ := jittery.rackPacket(e, p).check(t0.Add(time.Millisecond), p); lost {
		t.Errorf("jittery path (RTT variation %v): a packet sent 300 µs before one acknowledged is lost", jittery.rtt.RTTVar())
	}
	// A clone without samples of its own takes the path's variation, not
	// the estimator's guess before any sample.
	p.rtt = steady.rtt
	if lost, _ := (&Conn{}).rackPacket(e, p).check(t0.Add(time.Millisecond), p); !lost {
		t.Error("new clone on a steady path: a packet sent 300 µs before one acknowledged is not lost")
	}
}

// TestCCTimeoutNothingInFlight: a clone's retransmission timeout that
// found nothing in flight (its retransmissions wait for room in the
// shared window) leaves the session's window alone; one that presumed
// packets lost with the path silent collapses it.
func TestCCTimeoutNothingInFlight(t *testing.T) {
	c := &Conn{cfg: &Config{}, remote: peerAddr{ap: netip.MustParseAddrPort("192.0.2.1:4000")}}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ccJoin()
	p := c.ccs.p
	w := p.cc.Window()
	now := time.Now()
	c.ccTimeout(now, 1, 0)
	if got := p.cc.Window(); got != w {
		t.Fatalf("window %d after a timeout with nothing in flight, want %d", got, w)
	}
	c.ccTimeout(now, 1, 3)
	if got := p.cc.Window(); got >= w {
		t.Fatalf("window %d after a timeout that presumed 3 packets lost, want below %d", got, w)
	}
}

// TestLossWeight: a lost packet weighs as its share of a full packet at
// the path MTU, so a lost 200-byte message is a fraction of a
// congestion event, a lost full packet a whole one (0).
func TestLossWeight(t *testing.T) {
	for _, mtu := range []int{BaseDatagramSize, MaxDatagramSize} {
		c := &Conn{}
		c.setPLPMTU(mtu, "path")
		if got := c.lossWeight(mtu); got != 0 {
			t.Errorf("MTU %d: full packet weighs %d, want 0 (a full MSS)", mtu, got)
		}
		if got := c.lossWeight(mtu - wire.SkipLen); got != 0 {
			t.Errorf("MTU %d: full packet with a skip point weighs %d, want 0", mtu, got)
		}
		small := 244
		got := c.lossWeight(small)
		if want := small * MaxDatagramSize / (mtu - wire.SkipLen); got != want {
			t.Errorf("MTU %d: %d-byte packet weighs %d, want %d", mtu, small, got, want)
		}
		if c.lossWeight(0) != 1 {
			t.Errorf("MTU %d: an empty packet weighs %d, want 1", mtu, c.lossWeight(0))
		}
	}
}

// TestSpuriousTimeoutUndone: the receiver's acknowledgements are held
// up (a stalled path, not a lossy one): the sender's timeout collapses
// the shared window, and the late acknowledgements of packets it never
// resent take the collapse back.
//
// The undo can only tell when the packets went out before the timeout:
// one first sent after it, acknowledged before any original, rightly
// keeps the collapse. So the path first has a 30 ms delay, which makes
// the probe timeout long enough for the 20 packets to leave before it,
// and the stall is long against that timeout. A round in which a loaded
// host stalled the sender beyond a probe timeout anyway proves nothing
// and is run again.
func TestSpuriousTimeoutUndone(t *testing.T) {
	c, s, _, sc := netemCapPair(t, netem.Config{})
	path := sc.PacketConn.(*netem.PacketConn)
	path.SetConfig(netem.Config{Delay: 30 * time.Millisecond})
	for range 4 {
		pingPong(t, c, s)
	}
	for round := 1; ; round++ {
		if spuriousTimeoutRound(t, c, s, path) {
			return
		}
		if round == 5 {
			t.Fatalf("in %d rounds the sender never sent 20 packets within a probe timeout", round)
		}
	}
}

// spuriousTimeoutRound stalls the acknowledgements of 20 messages; it
// reports false if the sender's timers fired before it had sent them all.
func spuriousTimeoutRound(t *testing.T, c, s *Conn, path *netem.PacketConn) bool {
	ctx := testContext(t)
	st := c.Stats()
	before, probes, lost, undone := st.CongestionWindow, st.Probes, st.PacketsLost, st.SpuriousTimeouts
	// Long against the timeouts: two probe timeouts, then the
	// retransmission timeout that collapses the window, all well before
	// the first acknowledgement comes back.
	stall := max(400*time.Millisecond, 20*(st.SmoothedRTT+4*st.RTTVar))
	path.SetConfig(netem.Config{Delay: stall})
	defer path.SetConfig(netem.Config{Delay: 30 * time.Millisecond})
	msg := make([]byte, 1000)
	for range 20 {
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Sent before any loss timer fired?
	for {
		c.mu.Lock()
		pending, fired := c.snd.HasPending(), c.stats.Probes > probes || c.stats.PacketsLost > lost
		c.mu.Unlock()
		if fired {
			t.Logf("a loss timer fired before the 20 packets were sent: another round")
			drainRound(t, c, s)
			return false
		}
		if !pending {
			break
		}
		time.Sleep(time.Millisecond)
	}
	drainRound(t, c, s)
	st = c.Stats()
	t.Logf("stall %v: window %d before, %d after; %d spurious timeouts, %d probe timeouts", stall, before, st.CongestionWindow, st.SpuriousTimeouts-undone, st.Probes-probes)
	if st.SpuriousTimeouts == undone || st.CongestionWindow < before/2 {
		t.Fatalf("window %d before, %d after; %d spurious timeouts", before, st.CongestionWindow, st.SpuriousTimeouts-undone)
	}
	return true
}

// drainRound reads the 20 messages and waits for their acknowledgements.
func drainRound(t *testing.T, c, s *Conn) {
	ctx := testContext(t)
	for range 20 {
		if _, err := s.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for c.Stats().BytesInFlight > 0 {
		if ctx.Err() != nil {
			t.Fatalf("%d bytes never acknowledged", c.Stats().BytesInFlight)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
