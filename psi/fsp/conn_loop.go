package fsp

import (
	"runtime"
	"sync"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// The connection loop. The socket's reader only parses the clear header
// and queues the datagram on its connection (enqueue); the connection's
// own goroutine (run) decrypts, processes acknowledgements, runs the
// timers and sends. The goroutine exists only while there is work: it
// starts at the first packet or timer and exits when its queue is empty,
// so an idle connection holds no goroutine.

// inPacket is a datagram queued for a connection.
type inPacket struct {
	buf  *[]byte // pooled; nil once a receiver kept it
	n    int
	from peerAddr
}

// loopIdleCap is the most queue capacity a connection keeps when its loop
// goes idle; a burst that grew it further allocates again next time.
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
	room    chan struct{} // signalled when the loop takes a batch (made when first full)
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
	pend    []routed
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
		busy = rb.pend[i].c.enqueue(rb.pend[i:j]) || busy
		i = j
	}
	clear(rb.pend)
	rb.pend, rb.last = rb.pend[:0], nil
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

// queueRoom charges one datagram to the Transport's queue bound; false,
// charging nothing, when the bound is reached.
func (t *Transport) queueRoom(qlimit int) bool {
	lim := t.queueCap
	if lim <= 0 {
		lim = max(maxQueuedBytes, int64(qlimit)*bufCost)
	}
	if t.queued.Add(bufCost) > lim {
		t.queued.Add(-bufCost)
		return false
	}
	return true
}

// enqueue queues datagrams for c's loop, starting the loop if it is not
// running, and reports whether the queue is over half full. It takes
// ownership of the buffers. If the queue is full it waits up to
// queueWait for room, then drops.
func (c *Conn) enqueue(rs []routed) bool {
	q := &c.inq
	q.mu.Lock()
	if q.limit == 0 {
		q.limit = c.cfg.recvPackets() + maxBatch
	}
	waited := false
	for i := 0; i < len(rs); i++ {
		if len(q.pkts) < q.limit {
			if !c.t.queueRoom(q.limit) {
				// The Transport's bound: drop, do not wait.
				q.dropped++
				putBuf(rs[i].in.buf)
				continue
			}
			q.pkts = append(q.pkts, rs[i].in)
			continue
		}
		if !waited && q.running {
			waited = true
			if q.room == nil {
				q.room = make(chan struct{}, 1)
			}
			room := q.room
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
	for {
		q.mu.Lock()
		batch := q.pkts
		q.pkts = spare[:0]
		timer := q.timer
		q.timer = false
		if q.room != nil {
			signal(q.room)
		}
		if len(batch) == 0 && !timer {
			// Idle: keep small queues for next time, and no goroutine.
			if cap(q.pkts) > loopIdleCap {
				q.pkts = nil
			}
			if cap(batch) <= loopIdleCap {
				q.spare = batch[:0]
			}
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		for i := range batch {
			in := &batch[i]
			if wire.Parse((*in.buf)[:in.n], &pkt) == nil {
				if fc := c.handlePacket(in, &pkt); fc != nil && !containsConn(c.loop.dirty, fc) {
					c.loop.dirty = append(c.loop.dirty, fc)
				}
			}
			if in.buf != nil {
				putBuf(in.buf)
			}
			batch[i] = inPacket{}
			if (i+1)%maxBatch == 0 {
				// A long queue: acknowledge as it is worked through,
				// not only at its end.
				c.loop.flushDirty()
			}
		}
		c.t.queued.Add(-int64(len(batch)) * bufCost)
		if timer {
			c.onTimer()
		}
		c.loop.flushDirty()
		spare = batch
	}
}

// flushDirty lets the connections that got packets send what they owe.
func (l *loopState) flushDirty() {
	for i, fc := range l.dirty {
		fc.flush()
		l.dirty[i] = nil
	}
	l.dirty = l.dirty[:0]
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
