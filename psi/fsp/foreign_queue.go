package fsp

import (
	"net"
	"net/netip"
	"sync"
)

// The datagrams of a socket that are not FSP's (QUIC's, on a port the two
// share) wait for their reader in a queue. The read loop takes up to a
// batch of 64 datagrams from the socket at once, so a queue of 64 (as
// before 2 December) was full after one batch of junk, and QUIC on a
// shared port lost the datagrams its own socket's megabytes of buffer
// would have held: under a junk flood its dials waited for
// retransmissions (p99 0.6 to 1.4 s, against 15 ms on a socket of its
// own). The queue holds many batches, bounded by bytes too, since a
// datagram may be a jumbo one.
const (
	foreignQueueLen   = 1024
	foreignQueueBytes = 2 << 20
	// foreignSlot is what a datagram's place costs in the comparison of
	// prefixes, so that both bounds count: the queue's bytes over its
	// datagrams.
	foreignSlot = foreignQueueBytes / foreignQueueLen
)

type foreignPacket struct {
	b    []byte
	addr net.Addr
}

// foreignQueue is fair between source prefixes (/24, /48; hsrate.Prefix),
// as the handshake queue (hspool.go) is: each prefix has its own FIFO,
// readers take one datagram from each prefix in turn, and a full queue
// makes room by dropping the newest datagram of the prefix holding the
// most (bytes plus foreignSlot a datagram), if that is more than the
// sender's own prefix holds; else the new datagram is dropped. So one
// prefix flooding junk while QUIC reads slowly fills the queue only until
// someone else sends: an honest client's Initial always gets in, and
// waits behind one datagram of each busy prefix, not behind the flood.
// (Before, one channel of 1,024 datagrams: a flood from one address kept
// it full, and every other sender's datagrams were dropped.) The zero
// value is ready.
type foreignQueue struct {
	mu     sync.Mutex
	queues map[netip.Prefix]*foreignFIFO
	ring   []netip.Prefix // prefixes with datagrams, in serving order
	n      int            // datagrams queued
	bytes  int            // their bytes
	ready  chan struct{}  // holds a token while datagrams may wait
}

type foreignFIFO struct {
	pkts  []foreignPacket
	bytes int
}

// cost is what f holds, as compared between prefixes.
func (f *foreignFIFO) cost() int {
	if f == nil {
		return 0
	}
	return f.bytes + len(f.pkts)*foreignSlot
}

// signal returns the channel that has a token while datagrams may wait.
// q.mu held.
func (q *foreignQueue) signal() chan struct{} {
	if q.ready == nil {
		q.ready = make(chan struct{}, 1)
	}
	return q.ready
}

// wake leaves a token for a reader. q.mu held.
func (q *foreignQueue) wake() {
	select {
	case q.signal() <- struct{}{}:
	default:
	}
}

// wait returns a channel that receives when datagrams may be queued.
func (q *foreignQueue) wait() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.signal()
}

// push queues p from prefix src, making room from a larger prefix if the
// queue is full; it reports whether p was queued.
func (q *foreignQueue) push(src netip.Prefix, p foreignPacket) bool {
	n := len(p.b)
	if n > foreignQueueBytes {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n >= foreignQueueLen || q.bytes+n > foreignQueueBytes {
		big := q.largest()
		if big == src || q.queues[big].cost() <= q.queues[src].cost() {
			return false
		}
		q.dropNewest(big)
	}
	if q.queues == nil {
		q.queues = make(map[netip.Prefix]*foreignFIFO)
	}
	f := q.queues[src]
	if f == nil {
		f = &foreignFIFO{}
		q.queues[src] = f
		q.ring = append(q.ring, src)
	}
	f.pkts = append(f.pkts, p)
	f.bytes += n
	q.n++
	q.bytes += n
	q.wake()
	return true
}

// largest returns the prefix holding the most. q.mu held; at most
// foreignQueueLen prefixes hold datagrams.
func (q *foreignQueue) largest() netip.Prefix {
	var best netip.Prefix
	c := -1
	for _, pfx := range q.ring {
		if fc := q.queues[pfx].cost(); fc > c {
			best, c = pfx, fc
		}
	}
	return best
}

// dropNewest drops the newest datagram of pfx, which holds at least one.
// q.mu held.
func (q *foreignQueue) dropNewest(pfx netip.Prefix) {
	f := q.queues[pfx]
	last := len(f.pkts) - 1
	q.account(f, len(f.pkts[last].b))
	f.pkts[last] = foreignPacket{}
	f.pkts = f.pkts[:last]
	if len(f.pkts) == 0 {
		q.forget(pfx)
	}
}

// account uncounts a datagram of n bytes of f. q.mu held.
func (q *foreignQueue) account(f *foreignFIFO, n int) {
	f.bytes -= n
	q.bytes -= n
	q.n--
}

// forget removes the empty prefix pfx. q.mu held.
func (q *foreignQueue) forget(pfx netip.Prefix) {
	delete(q.queues, pfx)
	for i, p := range q.ring {
		if p == pfx {
			q.ring = append(q.ring[:i], q.ring[i+1:]...)
			break
		}
	}
}

// pop takes the oldest datagram of the prefix whose turn it is.
func (q *foreignQueue) pop() (foreignPacket, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return foreignPacket{}, false
	}
	pfx := q.ring[0]
	copy(q.ring, q.ring[1:])
	q.ring = q.ring[:len(q.ring)-1]
	f := q.queues[pfx]
	p := f.pkts[0]
	f.pkts[0] = foreignPacket{}
	f.pkts = f.pkts[1:]
	q.account(f, len(p.b))
	if len(f.pkts) == 0 {
		delete(q.queues, pfx)
	} else {
		q.ring = append(q.ring, pfx)
	}
	if q.n > 0 {
		q.wake() // for another reader
	}
	return p, true
}

// drain drops every datagram.
func (q *foreignQueue) drain() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queues, q.ring, q.n, q.bytes = nil, nil, 0, 0
}

// held returns the datagrams and bytes queued.
func (q *foreignQueue) held() (n, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n, q.bytes
}

// startForeign lets the read loop queue non-FSP datagrams (most
// transports never have a reader for them). t.mu held.
func (t *Transport) startForeign() { t.foreignOn.Store(true) }

// queueForeign queues a copy of b for the reader of non-FSP datagrams, or
// drops it when there is none or the queue has no room for its prefix.
// The read loop's.
func (t *Transport) queueForeign(b []byte, from *peerAddr) {
	if !t.foreignOn.Load() {
		return // nobody reads them: do not hold them
	}
	addr := from.addr
	if addr == nil {
		addr = net.UDPAddrFromAddrPort(from.ap)
	}
	t.foreign.push(pendingPrefix(from.ap.Addr()), foreignPacket{append([]byte(nil), b...), addr})
}
