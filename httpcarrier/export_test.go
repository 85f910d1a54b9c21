package httpcarrier

import "github.com/postsockets/postsockets/carrier"

// IdleForks returns the forks t keeps idle, for tests that count their
// packets.
func IdleForks(t *Transport) []*carrier.Carrier {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*carrier.Carrier
	for _, rc := range t.conns {
		out = append(out, rc.forks...)
	}
	return out
}

// SlotWaiters returns the requests t holds waiting for a slot.
func SlotWaiters(t *Transport) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.pools {
		for _, c := range p.classes {
			n += len(c.queue)
		}
		if p.anon != nil {
			n += len(p.anon.queue)
		}
	}
	return n
}

// Slots returns the slots t assumes origin serves a root.
func Slots(t *Transport, origin string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.slots(origin)
}

// BoundAssocs sets how many origins' Associations t keeps and returns
// how many it keeps now.
func BoundAssocs(t *Transport, max int) (kept func() int) {
	t.assocs.Max = max
	return t.assocs.Len
}

// SlotsKept returns how many origins' announced slots t keeps.
func SlotsKept(t *Transport) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sizes)
}
