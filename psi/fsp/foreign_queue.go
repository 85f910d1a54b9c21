package fsp

import "net"

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
)

type foreignPacket struct {
	b    []byte
	addr net.Addr
}

// foreignQueue returns the queue of non-FSP datagrams, made at first use.
func (t *Transport) foreignQueue() chan foreignPacket {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.foreign == nil {
		t.foreign = make(chan foreignPacket, foreignQueueLen)
	}
	return t.foreign
}

// startForeign makes the queue if need be (most transports never have a
// reader for it) and lets the read loop fill it. t.mu held.
func (t *Transport) startForeign() chan foreignPacket {
	if t.foreign == nil {
		t.foreign = make(chan foreignPacket, foreignQueueLen)
	}
	t.foreignOn.Store(true)
	return t.foreign
}

// queueForeign queues a copy of b for the reader of non-FSP datagrams, or
// drops it when there is none or the queue is full. The read loop's.
func (t *Transport) queueForeign(b []byte, from *peerAddr) {
	if !t.foreignOn.Load() {
		return // nobody reads them: do not hold them
	}
	n := int64(len(b))
	if t.foreignBytes.Add(n) > foreignQueueBytes {
		t.foreignBytes.Add(-n)
		return
	}
	addr := from.addr
	if addr == nil {
		addr = net.UDPAddrFromAddrPort(from.ap)
	}
	select {
	case t.foreign <- foreignPacket{append([]byte(nil), b...), addr}:
	default:
		t.foreignBytes.Add(-n)
	}
}

// takeForeign copies a dequeued datagram into b and gives back its room.
func (t *Transport) takeForeign(b []byte, p foreignPacket) (int, net.Addr, error) {
	t.foreignBytes.Add(-int64(len(p.b)))
	return copy(b, p.b), p.addr, nil
}

// dropForeign empties q, once its last reader is gone.
func (t *Transport) dropForeign(q chan foreignPacket) {
	for {
		select {
		case p := <-q:
			t.foreignBytes.Add(-int64(len(p.b)))
		default:
			return
		}
	}
}
