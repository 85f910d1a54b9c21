package httpcarrier

import (
	"context"
	"sync"

	"github.com/postsockets/postsockets/carrier"
)

// slot is a request's hold on one of its origin's slots (slotPool). A
// nil slot (no bound) releases nothing.
type slot struct {
	t      *Transport
	origin string
	pool   *slotPool
	c      *slotClass
	once   sync.Once
}

// slots returns origin's slots a root, or -1 for no bound. Called with
// t.mu held.
func (t *Transport) slots(origin string) int {
	switch n := t.MaxConcurrentRequests; {
	case n < 0:
		return -1
	case t.sizes[origin] > 0:
		return t.sizes[origin]
	case n == 0:
		return DefaultMaxConcurrentRequests
	default:
		return min(n, maxSlots)
	}
}

// setSlots notes the slots rc's origin announced on rc. A root taken out
// of the pool (draining, closed) announces for no request to come.
func (t *Transport) setSlots(rc *rootConn, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	origin := rc.origin
	if t.MaxConcurrentRequests < 0 || rc.draining || t.sizes[origin] == n {
		return
	}
	if t.sizes == nil {
		t.sizes = map[string]int{}
	}
	t.sizes[origin] = n
	if p := t.pools[origin]; p != nil {
		p.size = n
		p.grant()
	}
}

// acquire waits for a slot of origin for the client ctx is marked with,
// until ctx ends.
func (t *Transport) acquire(ctx context.Context, origin string) (*slot, error) {
	key, marked := clientPrefix(ctx)
	t.mu.Lock()
	n := t.slots(origin)
	if n < 0 {
		t.mu.Unlock()
		return nil, nil
	}
	p := t.pools[origin]
	if p == nil {
		p = newSlotPool(n)
		if t.pools == nil {
			t.pools = map[string]*slotPool{}
		}
		t.pools[origin] = p
	}
	c := p.class(key, marked)
	w := p.take(c)
	t.mu.Unlock()
	s := &slot{t: t, origin: origin, pool: p, c: c}
	if w == nil {
		return s, nil
	}
	select {
	case <-w.ready:
		return s, nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	left := p.leave(c, w)
	t.dropPoolLocked(origin, p)
	t.mu.Unlock()
	if !left {
		s.release() // granted as ctx ended
	}
	return nil, ctx.Err()
}

// release gives the slot back, once.
func (s *slot) release() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		s.t.mu.Lock()
		s.pool.put(s.c)
		s.t.dropPoolLocked(s.origin, s.pool)
		s.t.mu.Unlock()
	})
}

// dropPoolLocked forgets origin's pool p once it holds and awaits
// nothing. Called with t.mu held.
func (t *Transport) dropPoolLocked(origin string, p *slotPool) {
	if p.idle() && t.pools[origin] == p {
		delete(t.pools, origin)
		t.forgetSlotsLocked(origin)
	}
}

// forgetSlotsLocked forgets the slots origin announced once it has
// neither a root nor a pool, so that t keeps them only for the origins in
// use, not for every origin it ever reached; the next root announces them
// again. Called with t.mu held.
func (t *Transport) forgetSlotsLocked(origin string) {
	if t.conns[origin] == nil && t.pools[origin] == nil {
		delete(t.sizes, origin)
	}
}

// makeRoom closes rc's oldest idle fork if a new fork would put rc over
// the origin's slots: the server holds a slot for each idle fork, waiting
// for its next request, and would not take the new one.
func (t *Transport) makeRoom(rc *rootConn) {
	t.mu.Lock()
	n := t.slots(rc.origin)
	var f *carrier.Carrier
	if n >= 0 && len(rc.forks) > 0 && rc.inflight+len(rc.forks) > n {
		f = rc.forks[0]
		rc.forks = append(rc.forks[:0], rc.forks[1:]...)
	}
	t.mu.Unlock()
	if f != nil {
		t.closeLater(f)
	}
}
