package carrier

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// gatherFree is what a Carrier may hold of one message without counting
// against its Listener's receive budget: small messages never wait for
// room, however full the budget is.
const gatherFree = 128 << 10

// A gather is stalled, and while other gathers wait for room may be
// evicted, once it read less than stallBytes in the last stallAge, or
// less than paceBytes (the same rate) in the last stallAgeMax. Time in
// which this process did not run on time (the budget's timer fired over
// lateSlack late) counts for neither: the wait was ours, not the peer's,
// and our own peers, starved as we were, could not send either. Time in
// which the gather's transient held data from the peer that it had not
// read (psi.BacklogReporter) does not count for the first: the wait was
// a starved reader's or the path's (a loss under repair). The second
// counts it, so a peer that keeps a loss open can neither hold its room
// past stallAgeMax of our running time nor read at a lower rate. A peer
// cannot make our timers late unless it loads our CPU, and then every
// gather is as slow as its; lateness is measured once for the budget,
// not per gather or per waiter, so it stretches the clocks by no more
// than the time the process did not run.
const (
	stallAge    = time.Second
	stallAgeMax = 4 * stallAge
	stallBytes  = 16 << 10
	lateSlack   = 20 * time.Millisecond
)

// errEvicted ends a Carrier whose half-gathered message was evicted.
var errEvicted = post.Errorf(post.ErrBackpressure, "receive budget: the peer's message stalled half-gathered while other messages waited for room (Config.ReceiveBudget)")

// errGone stops a wait for room: the Carrier closed or ended.
var errGone = errors.New("carrier gone")

// recvBudget bounds the memory of whole messages on one Listener: the
// buffers in which Receive gathers them, on every Carrier the Listener
// accepted and their forks, and the messages a Sink or Responder queued
// for the application (Config.ReceiveBudget).
//
// A gather that needs more room than the budget has waits, reading
// nothing, so its stack's flow control holds the sender back. Holding
// while waiting could deadlock: every gather half done, none able to
// finish. So one gather at a time, the head, may use the reserve, room
// for one whole message that no other gather takes; sources take turns
// at being head. And a gather that stalls (its peer stops sending, or
// sends a trickle) while others wait is evicted, so stalled peers
// cannot hold the budget for good.
type recvBudget struct {
	total   int64 // all gathers and queued messages
	share   int64 // one source, bar its head
	reserve int64 // room only the head takes
	limit   int64 // the largest whole message that can fit

	mu      sync.Mutex
	held    int64
	peak    int64
	srcs    map[netip.Addr]*recvSource
	head    *claim
	turn    uint64 // heads chosen so far
	seq     uint64 // claims listed so far
	freed   chan struct{}
	scanAt  time.Time
	lateTo  time.Time // the end of the latest lateness excused
	evicted atomic.Uint64
}

// recvSource is what one source (hsrate.Host) holds of a budget.
type recvSource struct {
	held    int64
	gathers []*claim // listed, oldest first
	turn    uint64   // recvBudget.turn when it last had the head
}

// claim is one Carrier's share of a budget.
type claim struct {
	b       *recvBudget
	src     netip.Addr
	evict   func()
	backlog func() bool // the transient holds data the gather has not read; nil: never

	// Under b.mu.
	held     int64
	listed   bool   // gathering a message over gatherFree
	seq      uint64 // when listed
	waiting  bool
	evicting bool
	excused  int64 // unix nanos to which the first stall clock is excused (backlog, lateness)
	paceLate int64 // unix nanos to which the second is excused (lateness only)

	progress atomic.Int64 // unix nanos of the last stallBytes read
	read     int          // bytes read since progress; the reader's own
	pace     atomic.Int64 // unix nanos of the last paceBytes read
	paceRead int          // bytes read since pace; the reader's own
}

// newRecvBudget returns cfg's budget for a Listener, nil for none.
func newRecvBudget(cfg *Config) *recvBudget {
	total := cfg.ReceiveBudget
	if total < 0 {
		return nil
	}
	if total == 0 {
		total = max(64<<20, 4*cfg.maxMessage())
	}
	limit := min(cfg.maxMessage(), total+gatherFree-1)
	return &recvBudget{
		total:   total,
		share:   total / 4,
		reserve: min(total, chargeOf(limit+1)),
		limit:   limit,
		srcs:    map[netip.Addr]*recvSource{},
		freed:   make(chan struct{}),
	}
}

// chargeOf is what a gather buffer of capacity n counts.
func chargeOf(n int64) int64 { return max(0, n-gatherFree) }

// claim returns a share for a Carrier whose peer is at addr; evict ends
// the Carrier, backlog (nil: none known) reports whether its transient
// holds data from the peer that Receive has not read.
func (b *recvBudget) claim(addr netip.Addr, evict func(), backlog func() bool) *claim {
	return &claim{b: b, src: hsrate.Host(addr), evict: evict, backlog: backlog}
}

// fork returns a share for a fork of cl's Carrier, from the same peer.
func (cl *claim) fork(evict func(), backlog func() bool) *claim {
	return &claim{b: cl.b, src: cl.src, evict: evict, backlog: backlog}
}

// grow waits until cl may hold n bytes, listing cl as gathering. It
// returns ctx's error, or errGone once live reports the Carrier gone.
func (cl *claim) grow(ctx context.Context, n int64, live func() (<-chan struct{}, bool)) error {
	b := cl.b
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		// Stalled by us, not the peer: its clock starts again, under
		// b.mu with the end of the wait, or evictFor could find the
		// gather neither waiting nor fresh and evict it as it resumes.
		b.mu.Lock()
		if cl.waiting {
			cl.waiting = false
			cl.restart()
		}
		b.mu.Unlock()
	}()
	for {
		b.mu.Lock()
		if n <= cl.held {
			b.mu.Unlock()
			return nil
		}
		if !cl.listed {
			b.list(cl)
		}
		d := n - cl.held
		ok, byTotal := b.admits(cl, d)
		if ok {
			b.add(cl, d)
			b.mu.Unlock()
			return nil
		}
		cl.waiting = true
		freed := b.freed
		b.mu.Unlock()
		gone, alive := live()
		if !alive {
			return errGone
		}
		armed := time.Now()
		if timer == nil {
			timer = time.NewTimer(stallAge / 4)
		} else {
			timer.Reset(stallAge / 4)
		}
		select {
		case <-freed:
		case <-gone:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			b.evictFor(cl, byTotal, time.Since(armed)-stallAge/4)
		}
	}
}

// settle makes cl hold n bytes, waiting for nothing, and charges keep
// bytes more apart from cl: a message handed to a queue. It returns
// what gives those back (nil when keep is 0). With n 0, cl's gather is
// over.
func (cl *claim) settle(n, keep int64) (release func()) {
	// Only the Carrier's reader (under its rmu) changes cl's count and
	// listing, so it reads them without b.mu: a Receive that leaves both
	// as they were, as a small message does, takes no Listener-wide lock.
	if keep <= 0 && n == cl.held && (n != 0 || !cl.listed) {
		return nil
	}
	b := cl.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.add(cl, n-cl.held)
	if n == 0 && cl.listed {
		b.unlist(cl)
	}
	if keep <= 0 {
		return nil
	}
	s := b.source(cl.src)
	s.held += keep
	b.held += keep
	b.peak = max(b.peak, b.held)
	src := cl.src
	return sync.OnceFunc(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.srcs[src].held -= keep
		b.held -= keep
		b.tidy(src)
		b.wake()
	})
}

// settleAtMost lowers what cl holds to n, or to nothing with none.
func (cl *claim) settleAtMost(n int64, none bool) {
	held := cl.held // the reader's own (settle)
	if none {
		n = 0
	}
	if n < held || n == 0 {
		cl.settle(min(n, held), 0)
	}
}

// stop ends cl's gather but keeps what it holds (a message left pending
// for Ready in parts), so that it no longer holds up the others.
func (cl *claim) stop() {
	b := cl.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if cl.listed {
		b.unlist(cl)
	}
}

// noteRead records n bytes read for the stall check.
func (cl *claim) noteRead(n int) {
	var now int64
	if cl.read += n; cl.read >= stallBytes {
		now = time.Now().UnixNano()
		cl.read = 0
		cl.progress.Store(now)
	}
	if cl.paceRead += n; cl.paceRead >= paceBytes {
		if now == 0 {
			now = time.Now().UnixNano()
		}
		cl.paceRead = 0
		cl.pace.Store(now)
	}
}

// paceBytes is what a gather reads in stallAgeMax at the stall rate.
const paceBytes = stallBytes * int(stallAgeMax/stallAge)

// restart starts cl's stall clocks again: it read nothing for want of
// room or of a message, not of data. Called by cl's reader (read and
// paceRead are its own) with b.mu held (excused is under it).
func (cl *claim) restart() {
	now := time.Now().UnixNano()
	cl.read, cl.paceRead, cl.excused, cl.paceLate = 0, 0, 0, 0
	cl.progress.Store(now)
	cl.pace.Store(now)
}

// admits reports whether cl may take d more bytes, and if not, whether
// the whole budget (rather than cl's source share) is what is full.
// b.mu is held.
func (b *recvBudget) admits(cl *claim, d int64) (ok, byTotal bool) {
	if d <= 0 {
		return true, false
	}
	if b.head == nil {
		b.pickHead()
	}
	if cl == b.head {
		return b.held+d <= b.total, true
	}
	if b.held+d > b.total-b.reserve {
		return false, true
	}
	return b.srcs[cl.src].held+d <= b.share, false
}

// add charges d bytes (given back when negative) to cl. b.mu is held.
func (b *recvBudget) add(cl *claim, d int64) {
	if d == 0 {
		return
	}
	cl.held += d
	b.source(cl.src).held += d
	b.held += d
	b.peak = max(b.peak, b.held)
	if d < 0 {
		b.tidy(cl.src)
		b.wake()
	}
}

// list enters cl as gathering, after the source's older gathers.
func (b *recvBudget) list(cl *claim) {
	s := b.source(cl.src)
	b.seq++
	cl.listed, cl.seq, cl.evicting = true, b.seq, false
	cl.restart()
	s.gathers = append(s.gathers, cl)
}

// unlist ends cl's gather; a head gives its turn to the next source.
func (b *recvBudget) unlist(cl *claim) {
	s := b.srcs[cl.src]
	for i, g := range s.gathers {
		if g == cl {
			s.gathers = append(s.gathers[:i], s.gathers[i+1:]...)
			break
		}
	}
	cl.listed = false
	if b.head == cl {
		b.head = nil
		b.wake()
	}
	b.tidy(cl.src)
}

// pickHead makes head the oldest gather of the source that had the head
// least recently, so sources take turns.
func (b *recvBudget) pickHead() {
	var best *recvSource
	for _, s := range b.srcs {
		if len(s.gathers) == 0 {
			continue
		}
		if best == nil || s.turn < best.turn || s.turn == best.turn && s.gathers[0].seq < best.gathers[0].seq {
			best = s
		}
	}
	if best == nil {
		return
	}
	b.turn++
	best.turn = b.turn
	b.head = best.gathers[0]
}

func (b *recvBudget) source(addr netip.Addr) *recvSource {
	s := b.srcs[addr]
	if s == nil {
		s = &recvSource{}
		b.srcs[addr] = s
	}
	return s
}

// tidy forgets a source that holds nothing.
func (b *recvBudget) tidy(addr netip.Addr) {
	if s := b.srcs[addr]; s != nil && s.held == 0 && len(s.gathers) == 0 {
		delete(b.srcs, addr)
	}
}

// wake tells waiting gathers to look again. b.mu is held.
func (b *recvBudget) wake() {
	close(b.freed)
	b.freed = make(chan struct{})
}

// evictFor ends the stalled gathers holding up w: a stalled head always,
// and, when the whole budget is full, those of sources holding more than
// w's. At most one look every stallAge/4, whatever the waiters. late is
// how much later than asked w's timer fired: time the process did not
// run, which no gather's stall clocks count.
func (b *recvBudget) evictFor(w *claim, byTotal bool, late time.Duration) {
	now := time.Now()
	var stalled []*claim
	b.mu.Lock()
	// Every waiter's timer sees the same starvation: excuse each stretch
	// of it once, whichever timer saw it, and before the look is skipped.
	if late > lateSlack {
		if d := now.Sub(later(now.Add(-late), b.lateTo)); d > 0 {
			for _, s := range b.srcs {
				for _, g := range s.gathers {
					g.excuse(now.UnixNano(), d)
				}
			}
		}
		b.lateTo = now
	}
	if now.Before(b.scanAt) {
		b.mu.Unlock()
		return
	}
	b.scanAt = now.Add(stallAge / 4)
	mine := b.srcs[w.src].held
	for _, s := range b.srcs {
		for _, g := range s.gathers {
			if g == w || g.waiting || g.evicting || g.held == 0 || !g.stalled(now.UnixNano()) {
				continue
			}
			if g == b.head || byTotal && s.held > mine {
				g.evicting = true
				stalled = append(stalled, g)
			}
		}
	}
	b.mu.Unlock()
	// The transients are asked without b.mu: evicting keeps the gathers
	// out of other looks meanwhile. On a loaded host this goroutine may
	// wait long between the look and the eviction, while the gather
	// reads again: it is judged again, on the clocks as they are then.
	for _, g := range stalled {
		excused := g.paced(now.UnixNano()) && g.backlog != nil && g.backlog()
		b.mu.Lock()
		at := time.Now().UnixNano()
		if excused {
			g.excused = at
		}
		if excused || !g.listed || g.waiting || !g.stalled(at) {
			g.evicting = false
			b.mu.Unlock()
			continue
		}
		b.mu.Unlock()
		b.evicted.Add(1)
		go g.evict()
	}
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// excuse takes d, time the process did not run, off both of g's stall
// clocks, up to now. b.mu is held.
func (g *claim) excuse(now int64, d time.Duration) {
	g.excused = min(now, max(g.progress.Load(), g.excused)+int64(d))
	g.paceLate = min(now, max(g.pace.Load(), g.paceLate)+int64(d))
}

// stalled reports whether g read too little lately: it may be evicted,
// unless excused by a backlog. b.mu is held.
func (g *claim) stalled(now int64) bool {
	return now-max(g.progress.Load(), g.excused) >= int64(stallAge) || !g.paced(now)
}

// paced reports whether g read paceBytes within the last stallAgeMax of
// the time the process ran on time. b.mu is held.
func (g *claim) paced(now int64) bool {
	return now-max(g.pace.Load(), g.paceLate) < int64(stallAgeMax)
}

// stats returns what the budget holds now, the most it held and the
// gathers it evicted.
func (b *recvBudget) stats() (held, peak int64, evicted uint64) {
	if b == nil {
		return 0, 0, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.peak, b.evicted.Load()
}

// budgetLike puts a fork of parent under parent's receive budget.
func (c *Carrier) budgetLike(parent *Carrier) {
	if parent.recv != nil {
		c.recv = parent.recv.fork(c.evictGather, c.readBacklog)
	}
}

// readBacklog reports whether c's transient holds data from the peer
// that Receive has not read (psi.BacklogReporter).
func (c *Carrier) readBacklog() bool {
	t, ok := c.transient().(psi.BacklogReporter)
	if !ok {
		return false
	}
	ready, held := t.ReadBacklog()
	return ready || held
}
