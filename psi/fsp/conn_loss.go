package fsp

import (
	"fmt"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// onAck processes the acknowledgement fields every protected packet
// carries.
func (c *Conn) onAck(now time.Time, pkt *wire.Packet) {
	expected := wire.DecodeSeq(c.snd.Base(), pkt.Expected)
	if lim := expected + uint64(pkt.Window); lim > c.peerLimit {
		c.peerLimit = lim
	}
	if expected >= c.peerExp {
		c.peerExp, c.peerWin = expected, uint64(pkt.Window)
	}
	if expected <= c.snd.Base() && !pkt.HasSNACK {
		return
	}
	c.gapsIn = c.gapsIn[:0]
	var ackDelay time.Duration
	if pkt.HasSNACK {
		for _, g := range pkt.SNACK.Gaps {
			c.gapsIn = append(c.gapsIn, reliability.Gap{Gap: uint64(g.Gap), Data: uint64(g.Data)})
		}
		ackDelay = time.Duration(pkt.SNACK.AckDelay) * time.Microsecond
	}
	prior := c.ccPrior()
	c.snd.OnAck(now, expected, c.gapsIn, 0, c.lossDelay(), &c.ackRes)
	res := &c.ackRes
	if res.HasRTT {
		c.rtt.Update(res.RTTSample, ackDelay)
		if p := res.RTTEntry.Value.path; p != nil {
			p.rtt.Update(res.RTTSample, ackDelay) // the path the packet went on
		}
	}
	var sample time.Duration
	if res.HasRTT {
		sample = res.RTTSample
	}
	c.ccOnAck(now, res.Acked, prior, sample, ackDelay)
	if !c.collapsedAt.IsZero() && len(res.Acked) > 0 {
		c.spuriousTimeout(now, res.Acked)
	}
	for _, e := range res.Acked {
		if e.Abandoned {
			continue // accounted for when abandoned; the peer skipped it or got it
		}
		c.sndBytes -= e.Value.n + overhead
		c.pmtuAcked(e.Value.big)
		if e.Value.buf != nil {
			c.freeTx(e.Value.buf)
			e.Value.buf = nil
		}
		if e.Value.acked != nil {
			c.ackedFns = append(c.ackedFns, e.Value.acked)
			e.Value.acked = nil
		}
	}
	if c.qlog != nil {
		c.qlog.acked(now, res, expected)
	}
	c.onLost(now, res.Lost, prior)
	if c.state == stateClosing && c.snd.Base() > c.releaseSeq {
		// Everything up to and including the RELEASE is acknowledged. A
		// selective acknowledgement of the RELEASE alone is not enough:
		// data before it may still need retransmitting.
		c.releaseDone()
	}
	if res.Progress || len(res.Acked) > 0 {
		c.lastProgress = now
		c.backoff, c.probeBackoff, c.ptoCount = 0, 0, 0
		c.lossDeferred = false
		c.rtoAt = time.Time{}
		if c.snd.BytesInFlight() > 0 || c.milk && c.snd.Base() < c.milkLive {
			c.rtoAt = now.Add(c.lossTimeout())
		}
		signal(c.writable)
	}
	c.lossAt = c.snd.DetectLoss(now, c.lossDelay(), &c.ackRes)
	c.onLost(now, c.ackRes.Lost, prior)
	c.rackDetect(now)
	if c.qlog != nil {
		c.traceMetrics(now)
	}
}

// spuriousTimeout looks at the acknowledgements after a timeout that
// collapsed the window: one that covers a packet sent before the timeout
// and never sent again shows that what the timeout presumed lost was
// only late (the path or a host stalled), and the window comes back
// (ccUndoTimeout). A resent packet proves nothing either way (which copy
// arrived is unknown), unless its acknowledgement came sooner after the
// latest copy than the path's minimum RTT and the copy before that went
// before the timeout: then that earlier copy arrived. (After a stall the
// first late acknowledgements let the sender resend the rest at once,
// just before their own late acknowledgements come.) Once a packet first
// sent after the timeout is acknowledged, the originals' acknowledgements
// would have come first, and the timeout stands. Called with c.mu held.
func (c *Conn) spuriousTimeout(now time.Time, acked []*reliability.Entry[txData]) {
	at := c.collapsedAt
	for _, e := range acked {
		switch {
		case e.Abandoned || !e.Sent:
		case e.Retrans && !c.earlierCopyAcked(now, e):
		case e.Retrans || e.SentAt.Before(at):
			c.collapsedAt = time.Time{}
			if c.ccUndoTimeout() {
				c.stats.SpuriousTimeouts++
			}
			return
		default:
			c.collapsedAt = time.Time{}
		}
	}
}

// earlierCopyAcked reports whether an acknowledgement at now of the
// resent entry e can only be of a copy sent before the timeout that
// collapsed the window: its latest copy is younger than the minimum RTT,
// and the copy before went before the timeout.
func (c *Conn) earlierCopyAcked(now time.Time, e *reliability.Entry[txData]) bool {
	minRTT := c.lossRTT().MinRTT()
	return minRTT > 0 && now.Sub(e.SentAt) < minRTT && e.Value.prevSent.Before(c.collapsedAt)
}

func (c *Conn) onLost(now time.Time, lost []*reliability.Entry[txData], prior int) {
	c.stats.PacketsLost += uint64(len(lost))
	for _, e := range lost {
		if c.qlog != nil {
			c.qlog.lost(now, e)
		}
		if e.Value.path != nil {
			e.Value.path.lost++
		}
	}
	c.ccOnLost(now, lost, prior)
	if len(lost) > 0 {
		c.supersede()
	}
}

const (
	// minProbeInterval is the shortest interval between window and fork
	// credit probes, which ask a paused peer rather than repair a loss.
	minProbeInterval = 50 * time.Millisecond
	// ptoProbes is how many probe timeouts, each sending up to two
	// probes, pass before a retransmission timeout declares everything
	// in flight lost.
	ptoProbes = 2
	// minDeadAfter is the least time without acknowledgement progress
	// before maxBackoffs declares the peer dead: with an RTO floor of a
	// few milliseconds ten backoffs alone would take a loaded host's
	// stall for a dead peer.
	minDeadAfter = 5 * time.Second
)

// rto is the retransmission timeout with exponential backoff; the
// backoff resets on any acknowledgement progress.
func (c *Conn) rto() time.Duration {
	return min(c.lossRTT().RTO()<<min(c.backoff, 16), congestion.MaxRTO)
}

// lossTimeout is when to act on unacknowledged data: a probe timeout
// (RFC 9002 §6.2: smoothed RTT + max(4·RTT variance, 1 ms) + the
// peer's maximum acknowledgement delay, doubled per probe) for the first
// ptoProbes expiries, the backed-off RTO after them.
//
// When the newest packet sent asked for an immediate acknowledgement
// (the last of a clone's burst: conn_cc.go, askAck), the peer
// acknowledges everything on its arrival: the probe timeout has no
// acknowledgement delay to allow for, and its margin over the smoothed
// RTT is ptoGranularity, which the fine timer (finetimer.go) can keep,
// not 1 ms. A spurious probe costs a small packet, not the window.
func (c *Conn) lossTimeout() time.Duration {
	if c.ptoCount < ptoProbes {
		r := c.lossRTT()
		pto := r.PTO()
		if c.tailAsked() {
			pto = min(pto, r.SmoothedRTT()+max(4*r.RTTVar(), ptoGranularity))
		}
		return min(pto<<c.ptoCount, congestion.MaxRTO)
	}
	return c.rto()
}

// tailAsked reports whether the newest packet sent is in flight and
// asked for an immediate acknowledgement.
func (c *Conn) tailAsked() bool {
	if c.snd == nil {
		return false
	}
	e := c.snd.NewestSent()
	return e != nil && e.InFlight && e.Value.asked
}

// lossDeferMax bounds how long deferLoss puts off an expired loss timer.
// What it waits for is the socket reader's turn on a core, which does not
// grow with the path's round trip. At 10 ms (a quarter of the timeout up
// to it) a clone's probe over a 20 ms round trip waited 6 ms more
// whenever any sibling's datagram sat in the shared socket, which was
// most of the time: in a traced BenchmarkHeadOfLineRTT request/response
// run the client's probes went a median 32 ms after the lost packet, 26
// ms with this bound (docs/benchmarks-hol.md).
const lossDeferMax = time.Millisecond

// deferLoss puts off, once, a probe or retransmission timeout that
// expired while datagrams for c wait unprocessed, in its loop's queue or
// unread in its socket: on a busy host the timer's goroutine can run
// before the socket's reader, and the acknowledgements that would have
// stopped the timer are often among them (most of BenchmarkFourFlows'
// probes fired so, their packets all duplicates at the peer). The timer
// fires again a quarter of the timeout later (at least ptoGranularity, at
// most lossDeferMax), and then acts whatever waits. It reports whether
// it put the timer off. Called with c.mu held, rtoAt expired.
func (c *Conn) deferLoss(now time.Time) bool {
	if c.lossDeferred {
		return false
	}
	if a := c.lossTimerAction(); a != actProbe && a != actTimeout || !c.inputWaiting() {
		return false
	}
	c.lossDeferred = true
	c.rtoAt = now.Add(min(max(c.lossTimeout()/4, ptoGranularity), lossDeferMax))
	return true
}

// inputWaiting reports whether datagrams wait for c's loop, or unread in
// its Transport's socket (for any of its connections). Called with c.mu
// held.
func (c *Conn) inputWaiting() bool {
	c.inq.mu.Lock()
	n := len(c.inq.pkts)
	c.inq.mu.Unlock()
	if n > 0 {
		return true
	}
	if c.t == nil || c.t.udp == nil {
		return false
	}
	queued, _, _ := sockio.Backlog(c.t.udp)
	return queued > 0
}

// lossAction is what an expired loss timer does (onTimer).
type lossAction uint8

const (
	actNone        lossAction = iota
	actConfirm                // the handshake is unconfirmed: ask for an acknowledgement
	actProbe                  // a tail-loss probe of the data in flight
	actResend                 // resend, as the probe, what is declared lost
	actTimeout                // a retransmission timeout
	actWindowProbe            // ask a peer whose window is closed for an update
	actSkipPoint              // repeat a milk clone's skip point
)

// lossTimerAction chooses what an expired loss timer does: probes first
// (at most ptoProbes), then a retransmission timeout. Called with c.mu
// held.
func (c *Conn) lossTimerAction() lossAction {
	inFlight, lost := c.snd.BytesInFlight() > 0, c.snd.HasRetransmission()
	switch {
	case c.initiator && !c.confirmed:
		return actConfirm
	case c.ptoCount < ptoProbes && inFlight:
		return actProbe
	case c.ptoCount < ptoProbes && lost:
		return actResend
	case inFlight || lost:
		return actTimeout
	case c.snd.HasPending():
		return actWindowProbe
	case c.milk && c.snd.Base() < c.milkLive:
		return actSkipPoint
	}
	return actNone
}

// peerDone reports whether the peer released the connection and
// acknowledged everything we sent: it owes us nothing and we owe it
// nothing, so its silence (it may have exited) is no failure and is not
// probed. What it sent stays readable until Close, as TCP keeps data
// after a FIN;
// declaring it dead freed that data, and the reader got io.EOF in its
// place although the peer's Close had returned nil. Called with c.mu
// held.
func (c *Conn) peerDone() bool { return c.peerReleased && c.snd.Len() == 0 }

// windowProbe is the interval between probes of a closed peer window:
// the RTO doubled per probe, up to maxWindowProbe and
// well within the idle timeout.
func (c *Conn) windowProbe() time.Duration {
	limit := min(maxWindowProbe, max(c.cfg.idle()/4, minProbeInterval))
	return min(c.rtt.RTO()<<min(c.probeBackoff, 16), limit)
}

// handshakeRTT takes the handshake's last exchange as the first RTT
// sample, unless it was sent more than once (which copy was answered is
// unknown): a receiver that never sends data has no other, and its
// window auto-tuning needs one. The clock is read afresh: the loop's,
// read once for a run of datagrams, may be older than the send stamped
// while they waited, and the sample, negative, was dropped (a listener
// on a fast path kept the initial 100 ms). Called with c.mu held.
func (c *Conn) handshakeRTT() {
	sent := 0 // the responder counts resends only
	if c.initiator {
		sent = 1
	}
	if now := time.Now(); c.hsTries == sent && !c.hsSentAt.IsZero() && now.After(c.hsSentAt) {
		c.rtt.Update(now.Sub(c.hsSentAt), 0)
	}
}

func (c *Conn) lossDelay() time.Duration {
	d := max(c.rtt.SmoothedRTT(), c.rtt.LatestRTT())
	return max(d*9/8, time.Millisecond)
}

func (c *Conn) releaseDone() {
	select {
	case <-c.released:
	default:
		close(c.released)
	}
}

// ---- Timers -------------------------------------------------------------

// armTimer sets the timer to the earliest deadline, earlier or later than
// it was, or stops it if there is none. Called with c.mu held.
func (c *Conn) armTimer() {
	if c.state == stateClosed {
		return
	}
	var next time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	switch c.state {
	case stateInitiating, stateRequesting:
		at(c.rtoAt)
		at(c.hsDeadline)
	case stateAffirming:
		at(c.hsDeadline)
	default:
		at(c.rtoAt)
		at(c.ackAt)
		at(c.lossAt)
		at(c.paceAt)
		at(c.creditAt)
		at(c.ticketDue())
		if c.win != nil {
			at(c.win.at)
		}
		c.scheduleCompact()
		at(c.compactAt)
		if !c.peerDone() {
			at(c.lastRecv.Add(c.cfg.idle() + c.idleGrace.d()))
		}
		if c.authWait || c.earlyResp != nil {
			at(c.hsDeadline)
		}
		if ka := c.cfg.keepAlive(); ka > 0 && !c.peerDone() {
			at(c.lastKA.Add(ka))
		}
		at(c.quietAt)
	}
	// The timer follows the earliest deadline both ways: an
	// acknowledgement that moves it later or removes it pushes the timer
	// back or stops it, so it does not wake the loop for nothing.
	if next.Equal(c.timerAt) {
		return
	}
	c.timerAt = next
	if next.IsZero() {
		if c.t != nil {
			c.t.fine.cancel(c)
		}
		if c.timer != nil {
			c.timer.Stop()
		}
		return
	}
	d := time.Until(next)
	// A near deadline also goes to the fine timer, which fires it on time
	// where Go's timer would be up to a millisecond late; Go's stays
	// armed in case the fine timer is later still (the runtime polls it
	// as it polls sockets), and the one that fires second finds nothing due.
	if c.t != nil && (d >= fineHorizon || !c.t.fine.schedule(c, next)) {
		c.t.fine.cancel(c)
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.timerFired) // the loop runs onTimer
	} else {
		c.timer.Reset(d)
	}
}

func (c *Conn) onTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var late time.Duration
	if !c.timerAt.IsZero() {
		late = now.Sub(c.timerAt)
	}
	c.timerAt = time.Time{}
	switch c.state {
	case stateClosed:
		return
	case stateInitiating, stateRequesting:
		if !now.Before(c.hsDeadline) {
			c.failLocked(post.Errorf(post.ErrTimeout, "fsp: handshake timed out"))
			return
		}
		if !now.Before(c.rtoAt) {
			c.sendHandshake(now)
		}
		c.armTimer()
		return
	case stateAffirming:
		if !now.Before(c.hsDeadline) {
			c.failLocked(post.Errorf(post.ErrTimeout, "fsp: handshake not confirmed"))
			return
		}
		c.armTimer()
		return
	}
	if c.authWait && !now.Before(c.hsDeadline) {
		c.failLocked(post.Errorf(post.ErrTimeout, "fsp: listener did not confirm our CLIENT_AUTH"))
		return
	}
	if c.earlyResp != nil && !now.Before(c.hsDeadline) {
		c.failLocked(post.Errorf(post.ErrTimeout, "fsp: handshake not confirmed"))
		return
	}
	if c.ampBlocked() && !c.rtoAt.IsZero() && !now.Before(c.rtoAt) {
		// Nothing more may go before the initiator confirms or repeats
		// RESTORE (conn_halfrtt.go): no probe timeout meanwhile.
		c.rtoAt = time.Time{}
	}
	if idle := c.cfg.idle(); !c.peerDone() && c.idleExpired(now, idle, late) {
		c.failLocked(post.Errorf(post.ErrTimeout, "fsp: peer silent for %v", idle))
		return
	}
	if !c.ackAt.IsZero() && !now.Before(c.ackAt) {
		c.ackNow = true
	}
	if !c.compactAt.IsZero() && !now.Before(c.compactAt) {
		c.compact()
	}
	if !c.paceAt.IsZero() && !now.Before(c.paceAt) {
		c.paceAt = time.Time{}
	}
	if !c.lossAt.IsZero() && !now.Before(c.lossAt) {
		prior := c.ccPrior()
		c.lossAt = c.snd.DetectLoss(now, c.lossDelay(), &c.ackRes)
		c.onLost(now, c.ackRes.Lost, prior)
	}
	// What the siblings' acknowledgements revealed (conn_cc.go).
	c.rackDetect(now)
	if !c.rtoAt.IsZero() && !now.Before(c.rtoAt) && !c.deferLoss(now) {
		c.rtoAt = time.Time{}
		c.lossDeferred = false
		if c.snd.BytesInFlight() > 0 {
			c.pmtuSuspect(now) // a black hole for large packets?
		}
		switch c.lossTimerAction() {
		case actConfirm:
			c.ackReq = true
			c.backoff++
			c.rtoAt = now.Add(c.rto())
		case actProbe:
			// Tail-loss probe: resend the newest data in flight (and the
			// oldest), beyond the congestion window, and wait a doubled
			// probe timeout for the acknowledgement that repairs the
			// loss. Nothing is declared lost yet.
			c.ptoCount++
			c.probes = c.snd.Probe(2)
			c.stats.Probes++
			c.rtoAt = now.Add(c.lossTimeout())
		case actResend:
			// Nothing in flight, but what was is declared lost (by a
			// sibling's acknowledgement, just now, say) and waits to be
			// resent: that resend is the probe, beyond the window. No
			// timeout yet, which would reduce the window a second time.
			c.ptoCount++
			c.probes = 1
			c.rtoAt = now.Add(c.lossTimeout())
		case actTimeout:
			// Go back: everything in flight is presumed lost and resent
			// as the collapsed window allows.
			var gpn uint64
			if e := c.snd.Get(c.snd.Base()); e != nil {
				gpn = e.Value.gpn
			}
			n := c.snd.OnTimeout(c.snd.Len())
			c.stats.PacketsLost += uint64(n)
			c.supersede()
			if c.ccTimeout(now, gpn, n) {
				c.collapsedAt = now
			}
			c.backoff++
			if c.events.lossAt.IsZero() || c.lastProgress.After(c.events.lossAt) {
				// Once per stall: the first timeout since progress.
				c.events.lossAt = now
				c.emit(psi.EventSoftError, c.active, nil, fmt.Errorf("%w: %d packets presumed lost", errRetransmissionTimeout, n))
			}
			if c.qlog != nil {
				c.qlog.timeout(now, n, c.backoff)
			}
			c.probes = 1
			if c.resetToken != nil {
				// Data packets may be too small to draw a stateless
				// reset from a peer that forgot us: ask, padded.
				c.ackReq = true
			}
			c.rtoAt = now.Add(c.rto())
		case actWindowProbe:
			// Blocked by the peer's window: probe for an update. A paused
			// reader is no fault: the probes back off to a cap, and only
			// a peer that stops answering them is declared dead (by
			// IdleTimeout, as the answers keep it alive).
			c.ackReq = true
			c.probeBackoff = min(c.probeBackoff+1, 16)
			c.rtoAt = now.Add(c.windowProbe())
		case actSkipPoint:
			// The peer has not acknowledged the skip point: repeat it.
			c.ackReq = true
			c.backoff++
			c.rtoAt = now.Add(c.rto())
		}
		since := c.lastProgress
		if since.IsZero() {
			since = c.lastRecv // no data acknowledged yet: since establishment
		}
		if c.backoff > maxBackoffs && now.Sub(since) >= minDeadAfter {
			c.failLocked(post.Errorf(post.ErrTimeout, "fsp: peer not acknowledging"))
			return
		}
	}
	if c.qlog != nil {
		c.traceMetrics(now)
	}
	c.onCreditTimer(now)
	c.onTicketTimer(now)
	c.onWindowTimer(now)
	c.onQuietTimer(now)
	if ka := c.cfg.keepAlive(); ka > 0 && !c.peerDone() && now.Sub(c.lastKA) >= ka {
		c.lastKA = now
		if keepAliveProbe(now, c.lastRecv, ka) {
			c.ackReq = true
		}
	}
	c.trySend()
}

// keepAliveProbe reports whether a keep-alive tick at now asks the peer
// for an acknowledgement: when nothing came for half the interval, not a
// whole one. A tick that lands just short of a full interval after the
// last packet would otherwise wait another, and with the interval at a
// third (or, at its 500 ms floor, half) of the idle timeout the peer's
// answer could come after the timeout: silence is probed within 1.5
// intervals.
func keepAliveProbe(now, lastRecv time.Time, ka time.Duration) bool {
	return now.Sub(lastRecv) >= ka/2
}
