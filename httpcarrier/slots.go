package httpcarrier

import (
	"container/heap"
	"context"
	"net/netip"

	"github.com/postsockets/postsockets/internal/hsrate"
)

// DefaultMaxConcurrentRequests is the number of requests a Server serves
// at once on one root Carrier when Server.MaxConcurrentRequests is zero,
// and the number a Transport assumes an origin serves (its slots) when
// Transport.MaxConcurrentRequests is zero.
const DefaultMaxConcurrentRequests = 256

// maxSlots bounds a Transport's slots per origin, so that the share rule's
// products fit an int64.
const maxSlots = 1 << 24

type clientKey struct{}

// WithClient returns ctx marked with the client a request is made for, so
// that a Transport shares the origin's slots fairly between the prefixes
// of the clients (an IPv4 /24, an IPv6 /48): see
// Transport.MaxConcurrentRequests. RequestLimit marks every request it
// passes on with its client's address.
func WithClient(ctx context.Context, client netip.Addr) context.Context {
	if !client.IsValid() {
		return ctx
	}
	return context.WithValue(ctx, clientKey{}, hsrate.Prefix(client))
}

// clientPrefix returns the prefix WithClient marked ctx with.
func clientPrefix(ctx context.Context) (netip.Prefix, bool) {
	p, ok := ctx.Value(clientKey{}).(netip.Prefix)
	return p, ok
}

// slotPool shares an origin's slots between the clients' prefixes. A
// slot is held from the start of a request until its transaction ends.
// With free of the size slots free, a prefix holding h > 0 takes one
// more only while h*size < 2*free*free and more than a quarter of the
// slots are free (the reserve): the fuller the origin, the less a prefix
// already holding slots may take, and a prefix holding none takes any
// free slot, the reserve's included. Alone, a prefix gets half the
// slots; three, whatever the order, leave at least 63 of 256 free. Only
// prefixes holding none take from the reserve, one slot each, so holding
// every slot takes at least size/4+1 prefixes (65 of 256) whatever the
// order of takes and releases, and 67 in the worst (each taking all it
// may in turn: 128, 49, 15, then one each); before the reserve, 23. A
// request that may not take a slot waits; a freed slot goes to the
// waiting prefix holding fewest. Requests not marked with a client
// share one class that takes any free slot. Called with the Transport's
// mu held.
type slotPool struct {
	size    int
	held    int
	seq     uint64
	classes map[netip.Prefix]*slotClass
	anon    *slotClass // requests without a client; not in classes
	waiting classHeap  // classes with waiters but anon
}

// slotClass is one prefix's (or the unmarked requests') slots and
// waiters.
type slotClass struct {
	key   netip.Prefix
	anon  bool
	held  int
	queue []*slotWaiter // in arrival order
	index int           // in waiting, or -1
	since uint64        // when its queue last became non-empty
}

// slotWaiter is a request waiting for a slot; ready is closed when it
// has one.
type slotWaiter struct {
	ready   chan struct{}
	granted bool
}

func newSlotPool(size int) *slotPool {
	return &slotPool{size: min(size, maxSlots), classes: map[netip.Prefix]*slotClass{}}
}

// class returns the class of a request marked with key (ok) or not.
func (p *slotPool) class(key netip.Prefix, ok bool) *slotClass {
	if !ok {
		if p.anon == nil {
			p.anon = &slotClass{anon: true, index: -1}
		}
		return p.anon
	}
	c := p.classes[key]
	if c == nil {
		c = &slotClass{key: key, index: -1}
		p.classes[key] = c
	}
	return c
}

// may reports whether c may take a slot now.
func (p *slotPool) may(c *slotClass) bool {
	free := p.size - p.held
	if free <= 0 {
		return false
	}
	if c.anon || c.held == 0 {
		return true
	}
	// In int64: at maxSlots the products overflow a 32-bit int.
	return free > p.size/4 && int64(c.held)*int64(p.size) < 2*int64(free)*int64(free)
}

// take gives c a slot at once if it may and no request of its class
// waits already; otherwise it queues and returns a waiter.
func (p *slotPool) take(c *slotClass) *slotWaiter {
	if len(c.queue) == 0 && p.may(c) {
		c.held++
		p.held++
		return nil
	}
	w := &slotWaiter{ready: make(chan struct{})}
	if len(c.queue) == 0 {
		p.seq++
		c.since = p.seq
	}
	c.queue = append(c.queue, w)
	if !c.anon && c.index < 0 {
		heap.Push(&p.waiting, c)
	}
	return w
}

// leave takes w, which gave up waiting, out of c's queue. It reports
// false if w had been granted a slot meanwhile: the caller must give it
// back.
func (p *slotPool) leave(c *slotClass, w *slotWaiter) bool {
	if w.granted {
		return false
	}
	for i, x := range c.queue {
		if x == w {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			break
		}
	}
	if len(c.queue) == 0 && c.index >= 0 {
		heap.Remove(&p.waiting, c.index)
	}
	p.forget(c)
	return true
}

// put gives back a slot of c and hands the free slots on.
func (p *slotPool) put(c *slotClass) {
	c.held--
	p.held--
	if c.index >= 0 {
		heap.Fix(&p.waiting, c.index)
	}
	p.grant()
	p.forget(c)
}

// grant gives free slots to waiters, the class holding fewest first.
func (p *slotPool) grant() {
	for {
		var c *slotClass
		if len(p.waiting) > 0 && p.may(p.waiting[0]) {
			c = p.waiting[0]
		}
		if a := p.anon; a != nil && len(a.queue) > 0 && p.may(a) && (c == nil || a.held < c.held) {
			c = a
		}
		if c == nil {
			return
		}
		w := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		w.granted = true
		close(w.ready)
		c.held++
		p.held++
		switch {
		case c.index < 0:
		case len(c.queue) == 0:
			heap.Remove(&p.waiting, c.index)
		default:
			heap.Fix(&p.waiting, c.index)
		}
	}
}

// forget drops c once it holds and awaits nothing.
func (p *slotPool) forget(c *slotClass) {
	if c.held > 0 || len(c.queue) > 0 {
		return
	}
	if c.anon {
		p.anon = nil
	} else {
		delete(p.classes, c.key)
	}
}

// idle reports whether the pool holds and awaits nothing.
func (p *slotPool) idle() bool {
	return p.held == 0 && len(p.classes) == 0 && p.anon == nil
}

// classHeap orders waiting classes by slots held, then by how long they
// have waited.
type classHeap []*slotClass

func (h classHeap) Len() int { return len(h) }
func (h classHeap) Less(i, j int) bool {
	if h[i].held != h[j].held {
		return h[i].held < h[j].held
	}
	return h[i].since < h[j].since
}
func (h classHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *classHeap) Push(x any) {
	c := x.(*slotClass)
	c.index = len(*h)
	*h = append(*h, c)
}
func (h *classHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.index = -1
	return c
}
