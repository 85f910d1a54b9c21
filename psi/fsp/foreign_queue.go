package fsp

import (
	"net"
	"net/netip"
	"sync"

	"github.com/postsockets/postsockets/psi/fsp/internal/fairq"
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
// it full, and every other sender's datagrams were dropped.) Finding the
// largest prefix costs O(log n) (fairq), not a scan of up to 1,024
// prefixes a datagram under a spoofed flood. The zero value is ready.
type foreignQueue struct {
	mu    sync.Mutex
	q     fairq.Queue[netip.Prefix, foreignPacket]
	ready chan struct{} // holds a token while datagrams may wait
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
	q.mu.Lock()
	defer q.mu.Unlock()
	q.q.MaxItems, q.q.MaxSize, q.q.Slot = foreignQueueLen, foreignQueueBytes, foreignSlot
	if _, ok := q.q.Push(src, p, len(p.b), nil); !ok {
		return false
	}
	q.wake()
	return true
}

// pop takes the oldest datagram of the prefix whose turn it is.
func (q *foreignQueue) pop() (foreignPacket, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, p, ok := q.q.Pop()
	if q.q.Len() > 0 {
		q.wake() // for another reader
	}
	return p, ok
}

// drain drops every datagram.
func (q *foreignQueue) drain() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.q.Drain()
}

// held returns the datagrams and bytes queued.
func (q *foreignQueue) held() (n, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.q.Len(), q.q.Size()
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
