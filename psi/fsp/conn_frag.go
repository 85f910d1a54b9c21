package fsp

import (
	"time"

	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Data fragments. A data packet's payload is tied to its sequence
// number, so data packetized at a path MTU that later fell no longer
// fits one packet. The sender then sends the sequence number in several
// packets carrying the FRAGMENT extension (offset, total), each a
// complete packet under its own packet number; the receiver reassembles
// the payload and takes the sequence number only when it is whole. The
// sequence number is acknowledged, and so retransmitted, as a whole.
//
// A receiver reassembles at most maxPartials sequence numbers at once,
// inside its receive window; a fragment for another beyond them replaces
// the farthest from delivery, or is dropped if it is itself the
// farthest. The sender sends the fragments of one sequence number back
// to back, so few are ever partial. One partial is free; the others are
// charged to the listener's memory budget (once, until the connection
// closes), and without room there is only the one.

const maxPartials = 8

// partial is one sequence number being reassembled.
type partial struct {
	seq   uint64
	buf   *[]byte
	total int
	got   int
	have  [(maxJumboPayload + 63) / 64]uint64 // which payload bytes arrived
}

// dataFrags holds the partial sequence numbers of a connection.
type dataFrags struct {
	parts   []*partial
	charged bool // the budget holds maxPartials-1 buffers for it
}

// fragLimit is how many sequence numbers c may reassemble at once. Called
// with c.mu held.
func (c *Conn) fragLimit() int {
	f := &c.frags
	if !f.charged && len(f.parts) >= 1 {
		f.charged = c.charge(int64(maxPartials-1) * c.partialCost())
	}
	if f.charged {
		return maxPartials
	}
	return 1
}

// maxFragTotal is the largest payload c reassembles: a packet's of
// MaxDatagramSize, or of the largest datagram c takes once it takes jumbo
// ones (only data packetized at such a size is sent in fragments later).
// Called with c.mu held.
func (c *Conn) maxFragTotal() int {
	if c.rxJumbo {
		return c.maxDatagram() - wire.HeaderLen - fcrypto.TagLen
	}
	return MaxPayload
}

// sendFragments queues the payload of data packet p in fragments that
// fit room each, for trySend to seal. It returns the packet number of
// the last. Called with c.mu held.
func (c *Conn) sendFragments(p *wire.Packet, payload []byte, room int) uint64 {
	chunk := room - wire.FragmentLen
	var pn uint64
	for off := 0; off < len(payload); off += chunk {
		q := *p
		q.HasFragment, q.FragOffset, q.FragTotal = true, uint16(off), uint16(len(payload))
		pn = c.pn
		q.PN = uint32(pn) // each fragment is a packet of its own
		c.queueOut(&q, payload[off:min(off+chunk, len(payload))])
	}
	return pn
}

// onFragment takes one fragment of data packet seq; once the payload is
// whole it is handled as the packet itself. Called with c.mu held; it
// never keeps pt's buffer.
func (c *Conn) onFragment(now time.Time, seq uint64, pkt *wire.Packet, pt []byte) {
	exp := c.rcv.Expected()
	total, off := int(pkt.FragTotal), int(pkt.FragOffset)
	if seq < exp || seq >= exp+uint64(c.window()) || total > c.maxFragTotal() || len(pt) == 0 || off+len(pt) > total {
		c.ackNow = true // a duplicate, or out of bounds: say where we are
		return
	}
	f := &c.frags
	for i := 0; i < len(f.parts); i++ {
		if f.parts[i].seq < exp { // delivered whole meanwhile
			putBuf(f.parts[i].buf)
			f.parts = append(f.parts[:i], f.parts[i+1:]...)
			i--
		}
	}
	var pa *partial
	for _, q := range f.parts {
		if q.seq == seq {
			pa = q
		}
	}
	if pa != nil && pa.total != total {
		return // the fragments disagree: drop this one
	}
	if pa == nil {
		if len(f.parts) >= c.fragLimit() {
			far := 0
			for i, q := range f.parts {
				if q.seq > f.parts[far].seq {
					far = i
				}
			}
			if f.parts[far].seq < seq {
				return
			}
			putBuf(f.parts[far].buf)
			f.parts = append(f.parts[:far], f.parts[far+1:]...)
		}
		b := getBufFor(total)
		*b = (*b)[:cap(*b)] // pooled buffers come back at any length
		pa = &partial{seq: seq, buf: b, total: total}
		f.parts = append(f.parts, pa)
	}
	copy((*pa.buf)[off:], pt)
	for i := off; i < off+len(pt); i++ {
		if pa.have[i/64]&(1<<(i%64)) == 0 {
			pa.have[i/64] |= 1 << (i % 64)
			pa.got++
		}
	}
	if pa.got < pa.total {
		return
	}
	for i, q := range f.parts {
		if q == pa {
			f.parts = append(f.parts[:i], f.parts[i+1:]...)
			break
		}
	}
	whole := *pkt
	whole.HasFragment = false
	if !c.onData(now, &whole, pa.buf, (*pa.buf)[:pa.total]) {
		putBuf(pa.buf)
	}
}

// dropFragments releases the partial sequence numbers. Called with c.mu
// held.
func (c *Conn) dropFragments() {
	for _, q := range c.frags.parts {
		putBuf(q.buf)
	}
	c.frags.parts = nil
}
