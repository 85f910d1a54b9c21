package fsp

import (
	"sync"

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
	spare   []inPacket // the loop's batch, swapped with pkts
	limit   int        // the most packets queued; more are dropped
	running bool       // a goroutine runs the loop
	timer   bool       // the timer fired and the loop has not run it yet
	dropped uint64     // packets dropped because the queue was full

	// The loop's own, used only by the goroutine running it.
	dirty []*Conn // connections with something to send after a batch
}

// enqueue queues a datagram for c's loop, starting the loop if it is not
// running. It takes ownership of buf. A full queue drops the datagram.
func (c *Conn) enqueue(buf *[]byte, n int, from *peerAddr) {
	q := &c.inq
	q.mu.Lock()
	if q.limit == 0 {
		q.limit = c.cfg.recvPackets() + maxBatch
	}
	if len(q.pkts) >= q.limit {
		q.dropped++
		q.mu.Unlock()
		putBuf(buf)
		return
	}
	q.pkts = append(q.pkts, inPacket{buf: buf, n: n, from: *from})
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go c.run()
	}
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
				if fc := c.handlePacket(in, &pkt); fc != nil && !containsConn(q.dirty, fc) {
					q.dirty = append(q.dirty, fc)
				}
			}
			if in.buf != nil {
				putBuf(in.buf)
			}
			batch[i] = inPacket{}
		}
		if timer {
			c.onTimer()
		}
		for i, fc := range q.dirty {
			fc.flush()
			q.dirty[i] = nil
		}
		q.dirty = q.dirty[:0]
		spare = batch
	}
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
