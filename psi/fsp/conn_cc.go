package fsp

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Coupled congestion control. The connections of a session (the root and
// its clones) send through one congestion controller and one pacer per
// peer address, as QUIC's streams share their connection's: eight busy
// clones take one flow's share of a bottleneck. Each keeps its own
// sequence space, acknowledgements and retransmissions, so a loss on one
// clone holds up no other.
//
// The session also shares what it learns of losses (RACK, RFC 8985): a
// packet of one clone is lost once a packet sent after it on the same path
// by a sibling has been acknowledged and a reordering window has passed.
// A clone with one message outstanding learns of its loss from the
// siblings' acknowledgements, as a QUIC stream does from the packets of
// the others, instead of waiting for its probe timeout.
//
// Lock order: a connection's mu, then the group's; a connection never
// takes a sibling's lock while holding its own (kick only queues timer
// work on the sibling's loop).

// ccGroup is the congestion state a session's connections share.
type ccGroup struct {
	mu    sync.Mutex
	size  atomic.Int32 // members
	name  string       // the controller's name (Config.Congestion)
	pace  bool
	paths []*ccPath // at most maxPaths, the least used dropped first
	// pn numbers the session's data packets for the controllers, across
	// paths: a packet sent on one path and acknowledged or lost after its
	// connection moved is given to the new path's controller, whose
	// recovery epochs compare numbers.
	pn uint64
}

// ccPath is the shared state of one peer address.
type ccPath struct {
	addr     peerAddr
	cc       congestion.Controller
	pacer    *congestion.Pacer // nil when pacing is off
	inFlight int               // bytes in flight, every member's
	members  []*ccShare        // ccShare.midx is the index
	// wait lists the members the window held back, in order, from
	// waitHead (block, popWaiting); rack is a heap of the members with
	// packets in flight, by rackPacket.key (rackSet, rackDue). Per
	// acknowledgement, work grows with what the acknowledgement changes,
	// not with the members (conn_cc_queue.go).
	wait     []*ccShare
	waitHead int
	rack     []*ccShare
	// ackedSent is the send time of the newest packet acknowledged on the
	// path by any member (first transmissions only: Karn), and ackedRTT
	// its round trip.
	ackedSent time.Time
	ackedRTT  time.Duration
	lastAck   time.Time // when any member last had a packet acknowledged
	// rtt takes every member's samples: a clone alone sees a fraction of
	// them, too few to follow the path's variance (lossRTT).
	rtt congestion.RTTStats
}

// ccShare is a connection's part in its group.
type ccShare struct {
	c        *Conn
	g        *ccGroup
	p        *ccPath // where inFlight is counted
	inFlight int
	midx     int // index in p.members
	// Under g.mu: the oldest packet in flight (base.sent zero if none),
	// and whether the member was kicked to declare it lost (lostKick) or
	// to arm its loss timer for armedAt; while neither, it is in p.rack
	// (hidx, 1-based) under key.
	base     rackPacket
	lostKick bool
	armedAt  time.Time
	key      time.Time
	hidx     int
	blocked  bool    // the window held data back
	queued   *ccPath // the path whose waiting list holds s
	// left is the path the connection left at its teardown (ccLeave):
	// ccLock hands it to a closed connection's calls (Stats) without
	// counting the connection on it again.
	left *ccPath
	// wake, if set, replaces c.kick (tests of the group alone).
	wake func()
	// woken: kickBlocked woke the member for room in the window, which
	// it passes on if it finds nothing to send (ccPassOn).
	woken atomic.Bool
}

func newCCGroup(cfg *Config) *ccGroup {
	return &ccGroup{name: cfg.Congestion, pace: !cfg.DisablePacing}
}

func (g *ccGroup) newPath(addr peerAddr) *ccPath {
	cc, err := congestion.New(g.name, congestion.Config{MSS: MaxDatagramSize})
	if err != nil {
		cc = congestion.NewCubic(congestion.Config{MSS: MaxDatagramSize})
	}
	p := &ccPath{addr: addr, cc: cc}
	p.rtt.SetMaxAckDelay(maxAckDelay)
	p.rtt.SetMinRTO(minRTO)
	if g.pace {
		p.pacer = congestion.NewPacer(MaxDatagramSize)
	}
	return p
}

// ccJoin makes c a member of its parent's group, or of a new one. Called
// with c.mu held, from establish.
func (c *Conn) ccJoin() {
	if c.parent != nil && c.parent.ccs.g != nil {
		c.ccs.g = c.parent.ccs.g
	} else {
		c.ccs.g = newCCGroup(c.cfg)
	}
	c.ccs.c = c
	c.ccs.g.size.Add(1)
	c.ccs.g.mu.Lock()
	c.ccAttach()
	c.ccs.g.mu.Unlock()
}

// ccAttach moves c's share to the path of its current peer address.
// Called with c.mu and g.mu held.
func (c *Conn) ccAttach() *ccPath {
	s := &c.ccs
	if s.p != nil && samePeer(&s.p.addr, &c.remote) {
		return s.p
	}
	g := s.g
	var p *ccPath
	for _, q := range g.paths {
		if samePeer(&q.addr, &c.remote) {
			p = q
		}
	}
	if p == nil {
		if len(g.paths) >= maxPaths {
			victim := 0
			for i, q := range g.paths {
				if len(q.members) < len(g.paths[victim].members) {
					victim = i
				}
			}
			g.paths = append(g.paths[:victim], g.paths[victim+1:]...)
		}
		p = g.newPath(c.remote)
		g.paths = append(g.paths, p)
	}
	blocked := s.blocked
	if old := s.p; old != nil {
		s.leave()
		old.kickBlocked(nil) // c's bytes in flight left with it
	}
	s.p = p
	s.midx = len(p.members)
	p.members = append(p.members, s)
	p.inFlight += s.inFlight
	if blocked {
		p.block(s)
	}
	return p
}

// leave takes s off its path. Called with g.mu held.
func (s *ccShare) leave() {
	p := s.p
	if p == nil {
		return
	}
	p.inFlight -= s.inFlight
	if i, last := s.midx, len(p.members)-1; i <= last && p.members[i] == s {
		p.members[i] = p.members[last]
		p.members[i].midx = i
		p.members[last] = nil
		p.members = p.members[:last]
	}
	p.rackRemove(s)
	s.base, s.lostKick, s.armedAt = rackPacket{}, false, time.Time{}
	s.queued, s.blocked = nil, false
	s.p = nil
}

// ccLeave takes c out of its group. Called with c.mu held, at teardown.
func (c *Conn) ccLeave() {
	s := &c.ccs
	if s.g == nil {
		return
	}
	s.g.size.Add(-1)
	s.g.mu.Lock()
	p := s.p
	s.leave()
	s.inFlight = 0
	if p != nil {
		p.kickBlocked(nil)
	} else {
		p = s.g.newPath(c.remote) // never attached: a path of its own
	}
	s.left = p
	s.g.mu.Unlock()
}

// ccLock locks the group and returns c's path with c's bytes in flight
// brought up to date. Unlock with g.mu.Unlock. A connection that left
// the group gets the path it left, unchanged: attached again, its
// packets in flight, which nothing acknowledges any more, would hold
// the session's window for good (a Stats after an Abort did, and every
// clone of the session stalled).
func (c *Conn) ccLock() *ccPath {
	s := &c.ccs
	s.g.mu.Lock()
	if s.left != nil {
		return s.left
	}
	p := c.ccAttach()
	c.ccSync(p)
	return p
}

func (c *Conn) ccUnlock() { c.ccs.g.mu.Unlock() }

// ccSync brings c's share of the path's bytes in flight, and the send
// time of its oldest packet in flight, up to date. Called with c.mu and
// g.mu held.
func (c *Conn) ccSync(p *ccPath) {
	s := &c.ccs
	n := 0
	if c.snd != nil {
		n = c.snd.BytesInFlight()
	}
	p.inFlight += n - s.inFlight
	s.inFlight = n
	var base rackPacket
	if n > 0 {
		if e := c.snd.OldestSent(); e != nil {
			base = c.rackPacket(e, p)
		}
	}
	if base != s.base {
		p.rackSet(s, base)
	}
}

// ccCanSend reports whether the shared window has room, noting c as
// blocked if not, and if it has, how long the shared pacer holds the next
// packet: one lock of the group for both, as fill asks before every
// packet. Called with c.mu held.
func (c *Conn) ccCanSend(now time.Time) (ok bool, pace time.Duration) {
	p := c.ccLock()
	ok = p.cc.CanSend(p.inFlight)
	if ok {
		c.ccs.blocked = false // a stale entry on the waiting list, if any
		if p.pacer != nil {
			pace = p.pacer.TimeUntilSend(now, MaxDatagramSize)
		}
	} else {
		p.block(&c.ccs)
		c.ccs.woken.Store(false) // the room went to others
	}
	c.ccUnlock()
	return ok, pace
}

// ccPassOn hands the room c was woken for, and found nothing to fill, to
// the next blocked member: a wake-up must not end with a member that has
// nothing to send (its data was superseded, or only a retransmission
// already acknowledged was queued) while another waits. Called with c.mu
// held.
func (c *Conn) ccPassOn() {
	if c.ccs.g == nil || !c.ccs.woken.Swap(false) {
		return
	}
	p := c.ccLock()
	p.kickBlocked(&c.ccs)
	c.ccUnlock()
}

// ccSent records a data packet of the given size just sent, and returns
// its session-wide packet number. Called with c.mu held, after
// c.snd.OnSent.
func (c *Conn) ccSent(now time.Time, bytes int) uint64 {
	p := c.ccLock()
	g := c.ccs.g
	g.pn++
	p.cc.OnPacketSent(now, g.pn, bytes, p.inFlight)
	if p.pacer != nil {
		p.pacer.OnSent(now, bytes)
	}
	pn := g.pn
	c.ccUnlock()
	return pn
}

// ccPrior returns the path's bytes in flight before an acknowledgement is
// processed. Called with c.mu held.
func (c *Conn) ccPrior() int {
	p := c.ccLock()
	n := p.inFlight
	c.ccUnlock()
	return n
}

// ccOnAck gives the acknowledged entries to the shared controller and
// tells the siblings what the acknowledgement reveals: an opened window,
// or packets of theirs sent before one now acknowledged. Called with c.mu
// held.
func (c *Conn) ccOnAck(now time.Time, acked []*reliability.Entry[txData], prior int, sample, ackDelay time.Duration) {
	p := c.ccLock()
	defer c.ccUnlock()
	// The path's estimator takes every member's samples, and drives the
	// shared controller and pacer: a clone's own sees a fraction of them.
	if sample > 0 {
		p.rtt.Update(sample, ackDelay)
	}
	newest := p.ackedSent
	for _, e := range acked {
		if e.Abandoned && !e.Sent {
			continue
		}
		p.cc.OnAck(now, e.Value.gpn, e.Bytes, prior, &p.rtt)
		if !e.Retrans && e.SentAt.After(newest) {
			newest = e.SentAt
			p.ackedRTT = now.Sub(e.SentAt)
		}
	}
	if p.pacer != nil {
		p.pacer.SetRate(p.cc.PacingRate(&p.rtt))
	}
	p.ackedSent = newest
	if len(acked) > 0 {
		p.lastAck = now
	}
	p.kickBlocked(&c.ccs)
	// Only the members with a packet sent before the newest acknowledged
	// one have news (rackDue); each is told once per oldest packet. c
	// learns its own from rackDetect, after this.
	for m := p.rackDue(p.ackedSent); m != nil; m = p.rackDue(p.ackedSent) {
		lost, at := m.base.check(now, p)
		switch {
		case lost:
			m.lostKick = true
		case !at.IsZero():
			m.armedAt = at // to arm its loss timer
		default:
			continue // cannot happen: the key says it has news
		}
		if m != &c.ccs {
			m.kick()
		}
	}
}

// kick wakes s's connection (Conn.kick).
func (s *ccShare) kick() {
	if s.wake != nil {
		s.wake()
		return
	}
	s.c.kick()
}

// kickBlocked wakes the members the window held back once it has room.
// Called with g.mu held.
func (p *ccPath) kickBlocked(except *ccShare) {
	room := p.cc.Window() - p.inFlight
	if room <= 0 || len(p.members) == 0 {
		return
	}
	// As many as the room takes, a packet each, in the order they were
	// held back: waking them all for a packet's room only has them race
	// for it. except (the member acknowledged, which sends next anyway)
	// keeps its place.
	n := room/MaxDatagramSize + 1
	var skipped *ccShare
	for n > 0 {
		m := p.popWaiting()
		if m == nil {
			break
		}
		if m == except {
			skipped = m
			continue
		}
		m.blocked = false
		m.woken.Store(true)
		m.kick()
		n--
	}
	if skipped != nil {
		p.unpop(skipped)
	}
}

// ccOnLost gives lost entries to the shared controller. Called with c.mu
// held.
func (c *Conn) ccOnLost(now time.Time, lost []*reliability.Entry[txData], prior int) {
	if len(lost) == 0 {
		return
	}
	p := c.ccLock()
	for _, e := range lost {
		p.cc.OnLoss(now, e.Value.gpn, c.lossWeight(e.Bytes), prior)
	}
	p.kickBlocked(&c.ccs)
	c.ccUnlock()
}

// lossWeight is the size a lost packet of the given bytes weighs for
// the controller, whose MSS is MaxDatagramSize: a full packet at the
// current path MTU (with or without a skip point) weighs a full MSS (0),
// a smaller one its share of a full packet (congestion.Controller.OnLoss).
// Called with c.mu held.
func (c *Conn) lossWeight(bytes int) int {
	full := c.plpmtu() - wire.SkipLen
	if bytes >= full {
		return 0
	}
	return max(bytes*MaxDatagramSize/full, 1)
}

// ccTimeout tells the shared controller a retransmission timeout fired
// for c's packets from pn on. While siblings' packets are acknowledged the
// path is not dead, only c's packets were lost: the window is reduced as
// for a loss (once per recovery epoch), not collapsed, or one clone's
// timeout would stall every other. A timeout that found nothing in
// flight to presume lost (lost is 0: a clone whose retransmissions wait
// for room in the shared window) says nothing of the path and changes
// nothing. It reports whether it collapsed the window. Called with c.mu
// held.
func (c *Conn) ccTimeout(now time.Time, pn uint64, lost int) (collapsed bool) {
	if lost == 0 {
		return false
	}
	rto := c.rto()
	p := c.ccLock()
	if !p.lastAck.IsZero() && now.Sub(p.lastAck) < rto {
		p.cc.OnLoss(now, pn, 0, p.inFlight)
	} else {
		p.cc.OnRetransmissionTimeout()
		collapsed = true
	}
	c.ccUnlock()
	return collapsed
}

// ccUndoTimeout takes back the collapse of the shared window by a
// timeout found spurious (congestion.Undoer), unless a congestion event
// came after it. Called with c.mu held.
func (c *Conn) ccUndoTimeout() bool {
	p := c.ccLock()
	defer c.ccUnlock()
	u, ok := p.cc.(congestion.Undoer)
	if !ok || !u.UndoTimeout() {
		return false
	}
	p.kickBlocked(&c.ccs)
	return true
}

// ccState returns the shared window and whether it is in recovery, and
// the pacing rate. Called with c.mu held.
func (c *Conn) ccState() (cwnd int, recovery bool, rate float64) {
	if c.ccs.g == nil {
		return 0, false, 0
	}
	p := c.ccLock()
	defer c.ccUnlock()
	if p.pacer != nil {
		rate = p.pacer.Rate()
	}
	return p.cc.Window(), p.cc.InRecovery(), rate
}

// rackPacket is what session-wide loss detection (RACK, RFC 8985) needs
// of a packet in flight.
type rackPacket struct {
	sent  time.Time
	asked bool          // it asked for an immediate acknowledgement
	reo   time.Duration // if so: the reordering window
	wait  time.Duration // otherwise: how long after it was sent it is lost
	// bulk: its connection has rackOwnPackets or more in flight, whose own
	// acknowledgements find the losses of packets that did not ask.
	bulk bool
}

// rackOwnPackets is how many packets in flight a connection needs for its
// own acknowledgements to show a loss among them (three later packets,
// RFC 9002's packet threshold, and the one lost). With as many, the
// siblings' acknowledgements decide only for a packet that asked for an
// immediate one: a bulk clone's acknowledgements are delayed by its own
// peer loop, on a loaded host by more than rackAckSlack: with the rule
// for every packet, a traced BenchmarkFairness run with 8 clones took 2.5
// times the losses and window reductions of one without it
// (docs/benchmarks.md).
const rackOwnPackets = 4

// rackAckSlack is the most extra time, beyond 5/4 of the round trip and
// the peer's acknowledgement delay, that a packet which did not ask for an
// immediate acknowledgement may wait before a sibling's acknowledgement
// shows it lost (a quarter of the round trip up to this): the peer's
// delayed-acknowledgement timer fires a millisecond or two late on a
// loaded host, and clones' acknowledgements travel through different
// connection loops.
const rackAckSlack = 2 * time.Millisecond

// rackWindow is the least reordering window: how much later than a packet
// that asked for an immediate acknowledgement a packet acknowledged before
// it must have been sent for it to be lost. The window is a quarter of the
// minimum round trip (RFC 8985) above it: the clones' acknowledgements
// are sent and processed by different connection loops, whose order
// varies by more than this on a long path. On a LAN a loaded host's
// loops reorder by tens of microseconds: with a 10 µs floor half the
// losses this declared on veth were spurious (each a resend and a window
// reduction), while the probe timeout repairs a packet sent alone in a
// few hundred microseconds (docs/benchmarks-hol.md).
const rackWindow = 100 * time.Microsecond

// rackReorder returns the reordering window of a packet that asked for an
// immediate acknowledgement: a quarter of the minimum round trip, at least
// rackWindow, and twice the round trip's variation up to the round trip
// rtt. The variation counts because a sibling's acknowledgement overtakes
// this packet's by as much as the peer's and this end's loops are late in
// turn, and the RTT samples vary by what those delays add: on a host
// running more than its cores (load 8-15 on 2), HTTP over 8 clones on a
// lossless veth pair had 20-29% of its requests declared lost and resent
// with the window at 100 us, its shared congestion window held at 3-7 KB,
// and 5-10% with this bound; on a quiet path the variation is small and
// the window stays at its floor (docs/benchmarks-hol.md).
func rackReorder(minRTT, rttvar, rtt time.Duration) time.Duration {
	return max(minRTT/4, rackWindow, min(2*rttvar, rtt))
}

// rackPacket describes e for the RACK rules; p is c's path (or a copy),
// whose round trip counts too.
func (c *Conn) rackPacket(e *reliability.Entry[txData], p *ccPath) rackPacket {
	d := max(c.rtt.SmoothedRTT(), c.rtt.LatestRTT())
	if p.rtt.HasSample() {
		d = max(d, p.rtt.SmoothedRTT())
	}
	var jitter time.Duration // of the estimators with samples: RTTVar guesses before
	if c.rtt.HasSample() {
		jitter = c.rtt.RTTVar()
	}
	if p.rtt.HasSample() {
		jitter = max(jitter, p.rtt.RTTVar())
	}
	reo := rackReorder(c.rtt.MinRTT(), jitter, d)
	bulk := c.snd != nil && c.snd.BytesInFlight() >= rackOwnPackets*MaxDatagramSize
	return rackPacket{sent: e.SentAt, asked: e.Value.asked, reo: reo, wait: d*5/4 + maxAckDelay + min(d/4, rackAckSlack), bulk: bulk}
}

// check applies the RACK rules to a packet given the newest packet
// acknowledged on the path, and says whether it is lost, or else when to
// check again (zero: when more is acknowledged).
//
// A packet that asked for an immediate acknowledgement (the last of a
// burst) is acknowledged without delay. It is lost once a packet sent a
// reordering window (rackWindow) or more after it was acknowledged: its
// own acknowledgement would have come first. (One sent last, with nothing after it, is
// repaired by the probe timeout, which is short for such packets: see
// Conn.lossTimeout.)
//
// Any other packet may be acknowledged up to the peer's maximum
// acknowledgement delay late, when the next packet of its connection
// arrives: it is lost once a packet sent after it was acknowledged and
// 5/4 of the round trip, the delay and some slack passed (RFC 9002's
// time threshold, with room for the delay: rackAckSlack), unless its
// connection has enough in flight to tell for itself (bulk).
func (r rackPacket) check(now time.Time, p *ccPath) (lost bool, at time.Time) {
	acked := p.ackedSent
	if acked.IsZero() || r.bulk && !r.asked {
		return false, time.Time{}
	}
	if !r.asked {
		if !r.sent.Before(acked) {
			return false, time.Time{}
		}
		at = r.sent.Add(r.wait)
		return !now.Before(at), at
	}
	return !r.sent.Add(r.reo).After(acked), time.Time{}
}

// rackDetect declares lost c's packets in flight that the RACK rules
// (rackPacket.check) find lost, and arms the loss timer for the others.
// Called with c.mu held.
func (c *Conn) rackDetect(now time.Time) {
	if c.ccs.g == nil || c.snd == nil || c.snd.BytesInFlight() == 0 {
		return
	}
	p := c.ccLock()
	pc := *p // the fields check reads
	c.ccUnlock()
	if pc.ackedSent.IsZero() {
		return
	}
	prior := c.ccPrior()
	next := c.snd.DetectLossBy(now, pc.ackedSent, func(e *reliability.Entry[txData]) (bool, time.Time) {
		return c.rackPacket(e, &pc).check(now, &pc)
	}, &c.ackRes)
	c.onLost(now, c.ackRes.Lost, prior)
	if !next.IsZero() && (c.lossAt.IsZero() || next.Before(c.lossAt)) {
		c.lossAt = next
	}
}

// askAck reports whether a data packet should ask for an immediate
// acknowledgement: it is the last c has to send, and siblings share its
// loss detection, which the peer's acknowledgement delay would slow down.
// Called with c.mu held, e taken from c.snd.NextToSend.
func (c *Conn) askAck(e *reliability.Entry[txData]) bool {
	if c.ccs.g == nil || c.ccs.g.size.Load() < 2 || c.snd.HasRetransmission() {
		return false
	}
	n := c.snd.PeekNew()
	return n == nil || n == e && e.Seq+1 == c.snd.Next()
}

// lossRTT returns the estimator c's probe and retransmission timeouts
// use: on a session with clones the path's, which takes every member's
// samples, if it varies more than c's own. Called with c.mu held.
func (c *Conn) lossRTT() *congestion.RTTStats {
	if c.ccs.g == nil || c.ccs.g.size.Load() < 2 {
		return &c.rtt
	}
	p := c.ccLock()
	r := p.rtt
	c.ccUnlock()
	if !r.HasSample() || r.PTO() <= c.rtt.PTO() {
		return &c.rtt
	}
	return &r
}

// kick makes c's loop run its timer work (onTimer), session-wide loss
// detection included, as if its timer fired: the caller holds a sibling's
// lock, so c's own cannot be taken here.
func (c *Conn) kick() {
	q := &c.inq
	q.mu.Lock()
	q.timer = true
	if q.running {
		q.mu.Unlock()
		return
	}
	q.running = true
	q.mu.Unlock()
	go c.run()
}

// ccDebug describes c's share for debugState.
func (c *Conn) ccDebug() string {
	s := &c.ccs
	if s.g == nil {
		return "none"
	}
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	if s.p == nil {
		return fmt.Sprintf("[left own=%d]", s.inFlight)
	}
	return fmt.Sprintf("[own=%d path=%d cwnd=%d members=%d blocked=%v]", s.inFlight, s.p.inFlight, s.p.cc.Window(), len(s.p.members), s.blocked)
}
