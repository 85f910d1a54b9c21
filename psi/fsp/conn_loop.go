package fsp

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// The connection loop. The socket's reader only parses the clear header
// and queues the datagram on its connection (enqueue); the connection's
// own goroutine (run) decrypts, processes acknowledgements, runs the
// timers and sends. The goroutine exists only while there is work: it
// starts at the first packet or timer and exits when its queue is empty,
// so an idle connection holds no goroutine.

// inPacket is a datagram queued for a connection: in a pooled buffer of
// its own, or lent, in the socket's receive space that sockio lets the
// loop keep (hold) until it has processed the datagram.
type inPacket struct {
	buf  *[]byte      // pooled; nil while lent, or once a receiver kept it
	lent []byte       // the datagram in the socket's space, until copied or decrypted out
	hold *sockio.Hold // lent's space: the loop releases its share
	n    int
	from peerAddr
}

// bytes returns the datagram.
func (in *inPacket) bytes() []byte {
	if in.buf != nil {
		return (*in.buf)[:in.n]
	}
	return in.lent[:in.n]
}

// own gives a lent datagram a pooled buffer of its own, which receivers
// may keep: the first n-plen bytes copied, the rest left for the caller
// to fill (plen 0 copies it all). It returns the rest, empty. The share
// of the lent space is still the loop's to release.
func (in *inPacket) own(plen int) []byte { return in.ownInto(plen, nil) }

// ownInto is own into buf, a pooled buffer the caller took; nil takes
// one from the pool.
func (in *inPacket) ownInto(plen int, buf *[]byte) []byte {
	if buf != nil && !fits(buf, in.n) {
		putBuf(buf) // a spare of the other size
		buf = nil
	}
	if buf == nil {
		buf = getBufFor(in.n)
	}
	*buf = (*buf)[:cap(*buf)]
	h := in.n - plen
	copy(*buf, in.lent[:h])
	in.buf, in.lent = buf, nil
	return (*buf)[h:h]
}

// lentPerConn bounds the lent datagrams queued on one connection, about
// two of the socket's receive spaces when dense: past it the reader
// copies, so one slow loop cannot hold all the space sockio lets the
// socket keep (16 spaces).
const lentPerConn = 8 * maxBatch

// loopIdleCap is the most queue capacity a connection keeps once compact
// (conn_mem.go) found the queue oversized: a burst's capacity is kept
// while traffic flows, so that a bulk flow, whose loop goes idle every
// few hundred datagrams, does not regrow its queue each time.
const loopIdleCap = 32

// inQueue is a connection's receive queue and the state of its loop.
// Its mutex guards only the queue: it is never held across packet
// processing, crypto or system calls.
type inQueue struct {
	mu      sync.Mutex
	pkts    []inPacket
	spare   []inPacket    // the loop's batch, swapped with pkts
	limit   int           // the most packets queued; more are dropped
	running bool          // a goroutine runs the loop
	timer   bool          // the timer fired and the loop has not run it yet
	dropped uint64        // packets dropped because the queue was full
	lent    int           // lent datagrams in pkts and the loop's batch
	room    chan struct{} // signalled when the loop takes a batch (made when first full)
	grown   bool          // a batch's capacity was past loopIdleCap since the last trim
	trim    bool          // compact asked the loop to drop the capacity when idle
}

// oversized reports whether the queue holds a burst's capacity that
// compact should have dropped.
func (q *inQueue) oversized() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.grown && !q.trim
}

// shrink has the loop drop the queue's capacity past loopIdleCap when it
// next goes idle.
func (q *inQueue) shrink() {
	q.mu.Lock()
	q.trim = q.grown
	q.mu.Unlock()
}

// loopState is the loop's own, used only by the goroutine running it;
// kept apart from inQueue, which the socket reader writes.
type loopState struct {
	dirty []*Conn // connections with something to send after a batch
}

// routed is a datagram the socket reader routed to c.
type routed struct {
	c  *Conn
	in inPacket
}

// rxBatch collects one read batch's datagrams, so that each connection's
// queue is locked once per batch rather than once per datagram. The
// socket reader's own.
type rxBatch struct {
	last    *Conn // the connection of the batch's last datagram
	lastDst uint32
	pend    []routed     // lent datagrams
	hold    *sockio.Hold // their space, if connections may keep it
}

// dispatch queues the collected datagrams, each run for one connection
// at once. If a queue is filling up, the reader yields so that the
// connection's loop gets to run before it must drop.
func (rb *rxBatch) dispatch() {
	busy := false
	for i := 0; i < len(rb.pend); {
		j := i + 1
		for j < len(rb.pend) && rb.pend[j].c == rb.pend[i].c {
			j++
		}
		busy = rb.pend[i].c.enqueue(rb.pend[i:j], rb.hold) || busy
		i = j
	}
	clear(rb.pend)
	rb.pend, rb.last, rb.hold = rb.pend[:0], nil, nil
	if busy {
		runtime.Gosched()
	}
}

// queueWait is the longest the socket reader waits for room in a full
// connection queue before dropping: a loop that lost its core for a
// moment then leaves the datagrams in the socket buffer, as the old
// single read loop did, instead of dropping a window's worth at once.
const queueWait = 2 * time.Millisecond

// maxQueuedBytes bounds the datagrams queued on all of a Transport's
// connections together (Transport.queued): a connection's own queue is
// bounded by its receive window, but many authenticated connections with
// starved loops would otherwise hold many windows at once. It is at
// least one connection's full queue.
const maxQueuedBytes = 64 << 20

// bufCost is one datagram queued for a connection's loop, as the queue
// bounds count it: a small pooled datagram buffer and its bookkeeping;
// jumboCost is one above smallBufSize (queueCost).
const (
	bufCost   = smallBufSize + 64
	jumboCost = jumboBufSize + 64
)

// queueCost is what the queue bounds charge for a datagram of n bytes.
func queueCost(n int) int64 {
	if n <= smallBufSize {
		return bufCost
	}
	return jumboCost
}

// peerQueue counts the bytes queued on the connections of one peer
// address (the one each registered with), so that one peer's many
// connections cannot take the whole of the Transport's bound: each peer
// gets at most a quarter of it (Transport.peerCap in tests), and at least
// one connection's full queue.
type peerQueue struct {
	queued atomic.Int64
	addr   netip.Addr
	conns  int // registered connections (Transport.mu)
}

// queueRoom charges up to n bytes for c's datagrams to the Transport's
// queue bound and to its peer's, as much as both take, and returns how
// much: a run of datagrams is charged at once, not each (the counters
// are shared with every connection's loop). qlimit is c's queue limit
// in datagrams.
func (t *Transport) queueRoom(c *Conn, qlimit int, n int64) int64 {
	lim, plim := t.queueCap, t.peerCap
	if lim <= 0 {
		lim = max(maxQueuedBytes, int64(qlimit)*bufCost)
	}
	if plim <= 0 {
		plim = max(lim/4, int64(qlimit)*bufCost)
	}
	pq := c.pq
	if pq != nil {
		n = charge(&pq.queued, n, plim)
	}
	m := charge(&t.queued, n, lim)
	if pq != nil && m < n {
		pq.queued.Add(m - n)
	}
	return m
}

// charge adds up to n bytes to v, as many as keep it within lim, and
// returns how many; v never reads above lim.
func charge(v *atomic.Int64, n, lim int64) int64 {
	for {
		old := v.Load()
		k := min(n, lim-old)
		if k <= 0 {
			return 0
		}
		if v.CompareAndSwap(old, old+k) {
			return k
		}
	}
}

// unqueue gives back n bytes charged for datagrams c's loop has
// processed, or that were not queued.
func (t *Transport) unqueue(c *Conn, n int64) {
	t.queued.Add(-n)
	if c.pq != nil {
		c.pq.queued.Add(-n)
	}
}

// enqueue queues datagrams for c's loop, starting the loop if it is not
// running, and reports whether the queue is over half full. It takes
// ownership of the buffers; lent datagrams are kept in hold's space, up
// to lentPerConn of them, and copied otherwise. If the queue is full it
// waits up to queueWait for room, then drops.
func (c *Conn) enqueue(rs []routed, hold *sockio.Hold) bool {
	q := &c.inq
	q.mu.Lock()
	if q.limit == 0 {
		q.limit = c.cfg.recvPackets() + maxBatch
	}
	waited := false
	kept := 0
	var credit int64 // bytes charged to the Transport's bound, not yet queued
	for i := 0; i < len(rs); i++ {
		if len(q.pkts) < q.limit {
			cost := queueCost(rs[i].in.n)
			if credit < cost {
				var want int64
				for k := i; k < len(rs) && k-i < q.limit-len(q.pkts); k++ {
					want += queueCost(rs[k].in.n)
				}
				credit += c.t.queueRoom(c, q.limit, want-credit)
			}
			if credit < cost {
				// The Transport's bound: drop, do not wait.
				q.dropped++
				putBuf(rs[i].in.buf)
				continue
			}
			credit -= cost
			in := &rs[i].in
			if in.lent != nil {
				if hold != nil && q.lent < lentPerConn {
					in.hold = hold
					q.lent++
					kept++
				} else {
					in.own(0)
				}
			}
			q.pkts = append(q.pkts, *in)
			continue
		}
		if !waited && q.running {
			waited = true
			if q.room == nil {
				q.room = make(chan struct{}, 1)
			}
			room := q.room
			hold.Add(kept) // the loop may take them now
			kept = 0
			q.mu.Unlock()
			t := time.NewTimer(queueWait)
			select {
			case <-room:
			case <-t.C:
			}
			t.Stop()
			q.mu.Lock()
			i-- // try again
			continue
		}
		q.dropped++
		putBuf(rs[i].in.buf)
	}
	hold.Add(kept) // before the loop can see them
	if credit > 0 {
		c.t.unqueue(c, credit)
	}
	busy := len(q.pkts) > q.limit/2
	start := !q.running && len(q.pkts) > 0
	q.running = q.running || start
	q.mu.Unlock()
	if start {
		go c.run()
	}
	return busy
}

// timerFired is the connection timer's callback: the loop runs the timer
// work (onTimer), in this goroutine unless the loop is already running.
func (c *Conn) timerFired() {
	q := &c.inq
	q.mu.Lock()
	q.timer = true
	if q.running {
		q.mu.Unlock()
		return
	}
	q.running = true
	q.mu.Unlock()
	c.run()
}

// run is the connection loop: it processes queued datagrams and timer
// expiries until there are none, then returns. One goroutine at a time
// runs it (inQueue.running).
func (c *Conn) run() {
	var pkt wire.Packet
	q := &c.inq
	q.mu.Lock()
	spare := q.spare
	q.spare = nil
	q.mu.Unlock()
	var rel lentRelease
	for {
		q.mu.Lock()
		q.lent -= rel.done
		rel.done = 0
		batch := q.pkts
		q.pkts = spare[:0]
		timer := q.timer
		q.timer = false
		if q.room != nil {
			signal(q.room)
		}
		// By capacity, which is what the trim drops: append's size
		// classes take it past loopIdleCap with fewer datagrams queued.
		q.grown = q.grown || cap(batch) > loopIdleCap
		if len(batch) == 0 && !timer {
			// Idle: no goroutine. Both slices keep their capacity for
			// the next batch until compact asks for it back.
			q.spare = batch[:0]
			if q.trim {
				q.trim, q.grown = false, false
				if cap(q.pkts) > loopIdleCap {
					q.pkts = nil
				}
				if cap(q.spare) > loopIdleCap {
					q.spare = nil
				}
			}
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		// One reading of the clock serves a run of datagrams from one
		// address; a datagram from another reads it again, so that the
		// path logic (path.go) sees the paths' packets in order.
		now := time.Now()
		var last peerAddr
		var queued int64 // the batch's charge to the queue bounds
		for i := range batch {
			in := &batch[i]
			queued += queueCost(in.n)
			if i > 0 && !sameSource(&in.from, &last) {
				now = time.Now()
			}
			last = in.from
			if wire.Parse(in.bytes(), &pkt) == nil {
				if fc := c.handlePacket(in, &pkt, now); fc != nil && !containsConn(c.loop.dirty, fc) {
					c.loop.dirty = append(c.loop.dirty, fc)
				}
			}
			if in.buf != nil {
				putBuf(in.buf)
			}
			rel.add(in.hold)
			batch[i] = inPacket{}
			if (i+1)%maxBatch == 0 {
				// A long queue: acknowledge as it is worked through,
				// not only at its end.
				rel.flush()
				c.loop.flushDirty()
				now = time.Now()
			}
		}
		rel.flush()
		pkt = wire.Packet{} // keep no lent space reachable
		c.t.unqueue(c, queued)
		if timer {
			c.onTimer()
		}
		c.loop.flushDirty()
		spare = batch
	}
}

// lentRelease gives back the loop's shares of lent space, those of a run
// of datagrams from one space at once.
type lentRelease struct {
	h    *sockio.Hold
	n    int
	done int // shares released since the queue's count was updated
}

func (r *lentRelease) add(h *sockio.Hold) {
	if h == nil {
		return
	}
	if h != r.h {
		r.flush()
		r.h = h
	}
	r.n++
}

func (r *lentRelease) flush() {
	if r.h != nil {
		r.h.Release(r.n)
		r.done += r.n
	}
	r.h, r.n = nil, 0
}

// flushDirty lets the connections that got packets send what they owe.
//
// When a reader was just handed a packet whose sender asked for an
// immediate acknowledgement (the last of its burst: a request, say), the
// loop first yields: the reader it woke runs on this core (Go runs a
// goroutine another readied next) instead of waiting for the
// acknowledgement's sealing and system call, and a reply it writes at
// once carries the acknowledgement, which then costs no packet of its
// own. A reader that does not reply delays the acknowledgement by its
// turn on the core only.
func (l *loopState) flushDirty() {
	yield := false
	for _, fc := range l.dirty {
		yield = fc.replyWait.Swap(false) || yield
	}
	if yield {
		runtime.Gosched()
	}
	for i, fc := range l.dirty {
		fc.flush()
		l.dirty[i] = nil
	}
	l.dirty = l.dirty[:0]
}

// sameSource reports whether two datagrams came from one UDP address to
// one local address.
func sameSource(a, b *peerAddr) bool {
	return a.ap.IsValid() && a.ap == b.ap && a.dst == b.dst
}

func containsConn(cs []*Conn, c *Conn) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// queueDropped returns the datagrams dropped at c's full queue.
func (c *Conn) queueDropped() uint64 {
	c.inq.mu.Lock()
	defer c.inq.mu.Unlock()
	return c.inq.dropped
}
