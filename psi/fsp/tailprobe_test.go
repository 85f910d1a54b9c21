package fsp

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// dropData drops the next data packet it is asked to send once armed.
type dropData struct {
	net.PacketConn
	armed atomic.Bool
}

func (d *dropData) WriteTo(b []byte, addr net.Addr) (int, error) {
	var p wire.Packet
	if d.armed.Load() && wire.Parse(b, &p) == nil && p.Opcode == wire.PureData && d.armed.CompareAndSwap(true, false) {
		return len(b), nil
	}
	return d.PacketConn.WriteTo(b, addr)
}

// TestTailLossProbe loses the only packet of a lone message over a path
// of a few milliseconds' round trip: a tail-loss probe repairs it after
// about a probe timeout, not after an RTO floor of tens of milliseconds
// (issue 15).
func TestTailLossProbe(t *testing.T) {
	drop := &dropData{}
	c, s := lossyPairWrapped(t, netem.Config{Delay: 2 * time.Millisecond}, nil, // round trip about 4 ms
		func(pc net.PacketConn) net.PacketConn { drop.PacketConn = pc; return drop })
	ctx := testContext(t)
	t.Cleanup(func() { c.Abort(nil); s.Abort(nil) })
	ping := func(ctx context.Context) time.Duration {
		t.Helper()
		t0 := time.Now()
		if err := c.SendMessage(ctx, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		if err := s.SendMessage(ctx, []byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
		return d
	}
	for range 20 {
		ping(ctx) // RTT samples
	}
	best := time.Hour
	for range 5 {
		drop.armed.Store(true)
		best = min(best, ping(ctx))
	}
	st0 := c.Stats()
	t.Logf("lone lost packet repaired after %v at best (smoothed RTT %v, rttvar %v, probes %d)", best, st0.SmoothedRTT, st0.RTTVar, st0.Probes)
	if st0.Probes == 0 {
		t.Errorf("no tail-loss probe was sent")
	}
	// Contract: the repair does not wait for the old 50 ms RTO floor
	// (a loose bound: the probe timeout here is about 6 to 10 ms).
	if best >= 40*time.Millisecond {
		t.Errorf("lone lost packet repaired after %v at best, want a probe timeout, well under 40 ms", best)
	}
}

// TestLossTimeout: the first expiries are probe timeouts, doubled each
// time, then the backed-off RTO with a floor that suits the path.
func TestLossTimeout(t *testing.T) {
	c := &Conn{}
	c.rtt.SetMaxAckDelay(maxAckDelay)
	c.rtt.SetMinRTO(minRTO)
	c.rtt.Update(400*time.Microsecond, 0)
	for range 20 {
		c.rtt.Update(400*time.Microsecond, 0) // rttvar decays to 0
	}
	pto := c.rtt.SmoothedRTT() + time.Millisecond + maxAckDelay // 4·rttvar < 1 ms
	if got := c.lossTimeout(); got != c.rtt.PTO() || got > pto+time.Microsecond {
		t.Fatalf("first timeout %v, want the PTO %v", got, pto)
	}
	c.ptoCount = 1
	if got := c.lossTimeout(); got != 2*c.rtt.PTO() {
		t.Fatalf("second timeout %v, want twice the PTO %v", got, c.rtt.PTO())
	}
	c.ptoCount = ptoProbes
	if got := c.lossTimeout(); got != max(c.rtt.PTO(), minRTO) || got >= 10*time.Millisecond {
		t.Fatalf("RTO %v after the probes; want the PTO with a floor of %v", got, minRTO)
	}
	c.backoff = 3
	if got := c.lossTimeout(); got != 8*max(c.rtt.PTO(), minRTO) {
		t.Fatalf("backed-off RTO %v", got)
	}
	c.backoff = 40
	if got := c.lossTimeout(); got != congestion.MaxRTO {
		t.Fatalf("RTO capped at %v, want %v", got, congestion.MaxRTO)
	}
}

// sentEntry pushes a data entry on c's sender and sends it at now.
func sentEntry(c *Conn, now time.Time, asked bool) *reliability.Entry[txData] {
	c.snd.Push(txData{n: 100}, 100+overhead)
	e := c.snd.NextToSend(1 << 20)
	c.snd.OnSent(e, now)
	e.Value.asked = asked
	return e
}

// TestLossTimeoutAsked: a packet that asked for an immediate
// acknowledgement, sent last, is probed without waiting out the peer's
// acknowledgement delay; the RTO after the probes keeps its floor.
func TestLossTimeoutAsked(t *testing.T) {
	c := &Conn{snd: reliability.NewSender[txData](1)}
	c.rtt.SetMaxAckDelay(maxAckDelay)
	c.rtt.SetMinRTO(minRTO)
	for range 20 {
		c.rtt.Update(80*time.Microsecond, 0) // rttvar decays to 0
	}
	now := time.Now()
	sentEntry(c, now, false)
	if got, want := c.lossTimeout(), c.rtt.PTO(); got != want || want < c.rtt.SmoothedRTT()+time.Millisecond+maxAckDelay {
		t.Fatalf("probe timeout %v, want the PTO %v with 1 ms granularity and the acknowledgement delay", got, want)
	}
	sentEntry(c, now, true)
	want := c.rtt.SmoothedRTT() + ptoGranularity
	if got := c.lossTimeout(); got < want-time.Microsecond || got > want+time.Microsecond {
		t.Fatalf("probe timeout %v for an asked tail, want %v", got, want)
	}
	c.ptoCount = 1
	if got := c.lossTimeout(); got < 2*want-2*time.Microsecond || got > 2*want+2*time.Microsecond {
		t.Fatalf("second probe timeout %v, want %v", got, 2*want)
	}
	c.ptoCount = ptoProbes
	if got := c.lossTimeout(); got != c.rtt.RTO() || got < minRTO {
		t.Fatalf("RTO %v after the probes, want %v (at least %v)", got, c.rtt.RTO(), minRTO)
	}
}

// TestLossTimerAction: an expired loss timer probes what is in flight;
// with nothing in flight but a declared loss waiting to be resent, the
// resend is the probe (no retransmission timeout, no second window
// reduction); only after ptoProbes does a timeout follow.
func TestLossTimerAction(t *testing.T) {
	c := &Conn{snd: reliability.NewSender[txData](1), confirmed: true}
	if a := c.lossTimerAction(); a != actNone {
		t.Fatalf("idle: action %d", a)
	}
	now := time.Now()
	sentEntry(c, now, true)
	if a := c.lossTimerAction(); a != actProbe {
		t.Fatalf("one packet in flight: action %d, want a probe", a)
	}
	c.snd.Probe(1) // declared lost (a sibling's acknowledgement), not resent yet
	if c.snd.BytesInFlight() != 0 || !c.snd.HasRetransmission() {
		t.Fatal("test setup: the packet should wait for its resend")
	}
	if a := c.lossTimerAction(); a != actResend {
		t.Fatalf("lost packet awaiting its resend: action %d, want the resend as the probe", a)
	}
	c.ptoCount = ptoProbes
	if a := c.lossTimerAction(); a != actTimeout {
		t.Fatalf("after %d probes: action %d, want a timeout", ptoProbes, a)
	}
}

// TestDeferLoss: an expired probe timeout with datagrams waiting for the
// loop is put off once, a quarter of the timeout (within its bounds); the
// next expiry acts, and acknowledgement progress allows a deferral again.
// Nothing waiting, or a window probe, acts at once.
func TestDeferLoss(t *testing.T) {
	c := &Conn{snd: reliability.NewSender[txData](1), confirmed: true}
	c.rtt.SetMaxAckDelay(maxAckDelay)
	now := time.Now()
	if c.deferLoss(now) {
		t.Fatal("deferred with nothing in flight")
	}
	sentEntry(c, now, false)
	if c.deferLoss(now) {
		t.Fatal("deferred with nothing waiting")
	}
	c.inq.pkts = append(c.inq.pkts, inPacket{n: 1})
	if !c.deferLoss(now) {
		t.Fatal("not deferred with a datagram waiting")
	}
	want := min(max(c.lossTimeout()/4, ptoGranularity), lossDeferMax)
	if got := c.rtoAt.Sub(now); got != want {
		t.Fatalf("deferred by %v, want %v", got, want)
	}
	if c.deferLoss(now) {
		t.Fatal("deferred twice")
	}
	c.lossDeferred = false // as acknowledgement progress does (onAck)
	c.ptoCount = ptoProbes
	if !c.deferLoss(now) {
		t.Fatal("retransmission timeout not deferred with a datagram waiting")
	}
	if got := c.rtoAt.Sub(now); got > lossDeferMax {
		t.Fatalf("deferred by %v, more than %v", got, lossDeferMax)
	}
}

// TestDeferLossLongPath: over a 20 ms round trip an expired probe timeout
// with a datagram waiting is put off by at most a millisecond, the socket
// reader's turn on a core, not by a quarter of the timeout: clones share a
// socket, a sibling's datagram is nearly always waiting in it, and each of
// a clone's probes waited 6 ms more (issue 15). On a short path the
// deferral keeps its floor.
func TestDeferLossLongPath(t *testing.T) {
	for _, tc := range []struct {
		rtt, min, max time.Duration
	}{
		{20 * time.Millisecond, ptoGranularity, time.Millisecond},
		{100 * time.Microsecond, ptoGranularity, ptoGranularity},
	} {
		c := &Conn{snd: reliability.NewSender[txData](1), confirmed: true}
		c.rtt.SetMaxAckDelay(maxAckDelay)
		for range 20 {
			c.rtt.Update(tc.rtt, 0)
		}
		now := time.Now()
		sentEntry(c, now, true)
		c.inq.pkts = append(c.inq.pkts, inPacket{n: 1})
		if !c.deferLoss(now) {
			t.Fatalf("rtt %v: not deferred with a datagram waiting", tc.rtt)
		}
		if got := c.rtoAt.Sub(now); got < tc.min || got > tc.max {
			t.Errorf("rtt %v: probe timeout %v put off by %v, want %v to %v", tc.rtt, c.lossTimeout(), got, tc.min, tc.max)
		}
	}
}

// resendWatch drops the next data packet once armed and records, for
// each later copy of it, whether it asked for an immediate
// acknowledgement.
type resendWatch struct {
	net.PacketConn
	armed atomic.Bool
	mu    sync.Mutex
	seq   uint32
	drop  bool   // a packet was dropped: seq is its number
	asked []bool // its resends
}

func (w *resendWatch) WriteTo(b []byte, addr net.Addr) (int, error) {
	var p wire.Packet
	if wire.Parse(b, &p) == nil && p.Opcode == wire.PureData {
		w.mu.Lock()
		if w.armed.CompareAndSwap(true, false) {
			w.seq, w.drop, w.asked = p.Seq, true, nil
			w.mu.Unlock()
			return len(b), nil
		}
		if w.drop && p.Seq == w.seq {
			w.asked = append(w.asked, p.Flags&wire.FlagAckRequest != 0)
		}
		w.mu.Unlock()
	}
	return w.PacketConn.WriteTo(b, addr)
}

// TestResendAsksAck: the resend of a lone lost packet asks for an
// immediate acknowledgement. It keeps the lost packet's sequence number,
// so the receiver sees no gap and, not asked, held its acknowledgement up
// to maxAckDelay, where a QUIC receiver acknowledges a probe at once (the
// new packet number shows the gap). The sender waited, and on a short
// path its doubled probe timeout could fire again first (issue 15).
func TestResendAsksAck(t *testing.T) {
	w := &resendWatch{}
	c, s := lossyPairWrapped(t, netem.Config{}, nil,
		func(pc net.PacketConn) net.PacketConn { w.PacketConn = pc; return w })
	ctx := testContext(t)
	t.Cleanup(func() { c.Abort(nil); s.Abort(nil) })
	for i := range 3 {
		w.armed.Store(true)
		if err := c.SendMessage(ctx, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		asked := slices.Clone(w.asked)
		w.mu.Unlock()
		if len(asked) == 0 || !asked[0] {
			t.Fatalf("message %d: resends of the lost packet asked for an acknowledgement: %v, want the first to", i, asked)
		}
	}
}
