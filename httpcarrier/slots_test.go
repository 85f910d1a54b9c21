package httpcarrier

import (
	"context"
	"net/netip"
	"slices"
	"testing"
)

func prefixN(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
}

// TestSlotShares: prefixes taking all they may in turn, as an attacker
// would: the first gets half the slots, three leave 64 of 256 free for a
// fourth, and it takes 67 to hold them all (23 before the reserve).
func TestSlotShares(t *testing.T) {
	p := newSlotPool(256)
	var got []int
	for i := 0; p.held < p.size; i++ {
		c := p.class(prefixN(i), true)
		for p.may(c) {
			if p.take(c) != nil {
				t.Fatal("queued though it may take a slot")
			}
		}
		got = append(got, c.held)
		if i == 2 {
			if free := p.size - p.held; free != 64 {
				t.Errorf("three prefixes left %d slots free, want 64", free)
			}
			if !p.may(p.class(prefixN(999), true)) {
				t.Error("a fourth prefix may not take a free slot")
			}
		}
	}
	t.Logf("%d prefixes took all 256 slots: %v", len(got), got)
	if got[0] != 128 {
		t.Errorf("a prefix alone got %d slots, want 128", got[0])
	}
	if len(got) < 65 {
		t.Errorf("%d prefixes took all 256 slots, want at least 65", len(got))
	}
}

// TestSlotReserve: over every state k prefixes reach by taking and
// giving back slots in any order, k = size/4 never hold every slot
// (only a prefix holding none takes from the reserve); without the
// reserve, 7 of 28 did. Ten do, so the search finds full states.
func TestSlotReserve(t *testing.T) {
	const size = 28
	for k, want := range map[int]bool{size / 4: false, 10: true} {
		if full := fullReachable(size, k); full != want {
			t.Errorf("%d prefixes can hold all %d slots: %v, want %v", k, size, full, want)
		}
	}
}

// fullReachable reports whether k prefixes can hold all size slots of
// a pool, searching every state reachable by one take (that the pool
// allows) or one give back at a time. The prefixes are alike, so a
// state is the slots they hold, largest first.
func fullReachable(size, k int) bool {
	type state [16]int // slots held by each prefix
	seen := map[state]bool{{}: true}
	queue := []state{{}}
	for len(queue) > 0 {
		s := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		p := newSlotPool(size)
		for i := range k {
			p.class(prefixN(i), true).held = s[i]
			p.held += s[i]
		}
		if p.held == size {
			return true
		}
		for i := range k {
			for _, d := range []int{1, -1} {
				if d > 0 && !p.may(p.class(prefixN(i), true)) || d < 0 && s[i] == 0 {
					continue
				}
				next := s
				next[i] += d
				slices.SortFunc(next[:k], func(a, b int) int { return b - a })
				if !seen[next] {
					seen[next] = true
					queue = append(queue, next)
				}
			}
		}
	}
	return false
}

// TestSlotOrder: a freed slot goes to the waiting prefix holding fewest,
// a prefix over its share waits while slots are free, a request that
// gives up leaves the queue, and an unmarked request takes any free
// slot.
func TestSlotOrder(t *testing.T) {
	p := newSlotPool(8)
	heavy, light := p.class(prefixN(1), true), p.class(prefixN(2), true)
	for p.may(heavy) {
		p.take(heavy)
	}
	if heavy.held != 4 {
		t.Fatalf("a prefix alone holds %d of 8, want 4", heavy.held)
	}
	wHeavy := p.take(heavy)
	if wHeavy == nil {
		t.Fatal("a prefix over its share took another slot")
	}
	for range 2 {
		if p.take(light) != nil {
			t.Fatal("a second prefix waits though slots are free")
		}
	}
	// 2 held, 2 free: 2*8 >= 2*2*2.
	if w := p.take(light); w == nil {
		t.Fatal("a prefix holding 2 with 2 free took one")
	} else if !p.leave(light, w) {
		t.Fatal("a waiter that was never granted could not leave")
	}
	for i := range 2 {
		if p.take(p.class(prefixN(3+i), true)) != nil {
			t.Fatal("a newcomer waits though a slot is free")
		}
	}
	// Full: a newcomer and the heavy prefix wait; a freed slot goes to
	// the newcomer.
	wLate := p.take(p.class(prefixN(5), true))
	if wLate == nil {
		t.Fatal("took a slot of a full pool")
	}
	p.put(light)
	select {
	case <-wLate.ready:
	default:
		t.Fatal("the freed slot did not go to the prefix holding none")
	}
	select {
	case <-wHeavy.ready:
		t.Fatal("the prefix holding most got the freed slot")
	default:
	}
	// Unmarked requests are not limited by the share.
	anon := p.class(netip.Prefix{}, false)
	p.put(heavy)
	if p.take(anon) != nil {
		t.Fatal("an unmarked request waits though a slot is free")
	}
	if p.leave(heavy, wHeavy) != true || len(p.waiting) != 0 {
		t.Fatal("the heavy prefix's waiter did not leave")
	}
}

// TestSlotForget: the pool forgets a prefix once it holds and awaits
// nothing, and the Transport its pool.
func TestSlotForget(t *testing.T) {
	tr := &Transport{MaxConcurrentRequests: 2}
	ctx := WithClient(context.Background(), netip.MustParseAddr("192.0.2.1"))
	s1, err := tr.acquire(ctx, "o:80")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := tr.acquire(context.Background(), "o:80")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tr.acquire(cctx, "o:80"); err == nil {
		t.Fatal("a request took a slot of a full pool")
	}
	s1.release()
	s1.release() // once
	s2.release()
	if len(tr.pools) != 0 {
		t.Fatalf("%d pools left once every slot was given back", len(tr.pools))
	}
}

// BenchmarkSlotPoolFull: a full pool of 256 slots with 10,000 prefixes
// waiting, one request each: one op ends a request, grants its slot to
// the prefix that waited longest, and queues a new request of the
// prefix that ended one.
func BenchmarkSlotPoolFull(b *testing.B) {
	const size, waiting = 256, 10_000
	p := newSlotPool(size)
	var holders []*slotClass
	for i := range size + waiting {
		c := p.class(prefixN(i), true)
		if p.take(c) == nil {
			holders = append(holders, c)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		c := holders[0]
		holders = holders[1:]
		g := p.waiting[0]
		p.put(c)
		holders = append(holders, g)
		p.take(p.class(c.key, true)) // c was forgotten: it held and awaited nothing
	}
}

// TestSlotShareHuge: the share rule holds at the largest size a back may
// announce (maxSlots), where its products overflowed a 32-bit int: a
// prefix holding one slot of 2^24 free but one may take another, and one
// holding half may not.
func TestSlotShareHuge(t *testing.T) {
	p := newSlotPool(maxSlots)
	c := p.class(prefixN(1), true)
	if p.take(c) != nil {
		t.Fatal("the first request waits")
	}
	if !p.may(c) {
		t.Fatalf("a prefix holding 1 of %d slots may not take another", maxSlots)
	}
	c.held, p.held = maxSlots/2, maxSlots/2
	if p.may(c) {
		t.Fatalf("a prefix holding half of %d slots may take another", maxSlots)
	}
	if !p.may(p.class(prefixN(2), true)) {
		t.Fatal("a prefix holding none may not take a free slot")
	}
}
