package carrier

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// alive is a live func for a Carrier that never closes.
func alive() (<-chan struct{}, bool) { return nil, true }

func srcAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}) }

// gatherAll has each claim gather one message of size bytes in 64 KiB
// steps, reading at once, then hand it over.
func gatherAll(t *testing.T, b *recvBudget, cls []*claim, size int64) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // of the bubble's time
	defer cancel()
	var wg sync.WaitGroup
	for _, cl := range cls {
		wg.Go(func() {
			for have := int64(gatherFree); have < size+1; have = min(2*have, size+1) {
				if err := cl.grow(ctx, chargeOf(have), alive); err != nil {
					t.Error(err)
					return
				}
				cl.noteRead(int(have / 2))
				time.Sleep(time.Millisecond)
			}
			cl.settle(0, 0)
		})
	}
	wg.Wait()
}

// TestRecvBudgetNoDeadlock: more gathers than the budget holds, all
// half done and waiting for room, still all finish (the head takes the
// reserve, sources in turn), and the budget never holds more than its
// total.
func TestRecvBudgetNoDeadlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRecvBudget(&Config{ReceiveBudget: 4 << 20, MaxMessageSize: 1 << 20})
		var cls []*claim
		for i := range 12 {
			cls = append(cls, b.claim(srcAddr(i%3), func() { t.Error("evicted a gather that was reading") }, nil))
		}
		gatherAll(t, b, cls, 1<<20)
		held, peak, evicted := b.stats()
		if held != 0 || peak > b.total || evicted != 0 {
			t.Fatalf("held %d, peak %d of %d, evicted %d", held, peak, b.total, evicted)
		}
	})
}

// TestRecvBudgetEvictsStalled: gathers that stop reading while holding
// the whole budget are evicted once stalled, so another gets room; one
// that keeps reading is not.
func TestRecvBudgetEvictsStalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRecvBudget(&Config{ReceiveBudget: 4 << 20, MaxMessageSize: 1 << 20})
		var evicted atomic.Int32
		for i := range 6 {
			cl := b.claim(srcAddr(1+i%3), nil, nil)
			cl.evict = func() { evicted.Add(1); cl.settle(0, 0) }
			if err := cl.grow(t.Context(), chargeOf(1<<19), alive); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second/2)
		defer cancel()
		w := b.claim(srcAddr(9), nil, nil)
		if err := w.grow(ctx, chargeOf(1<<20), alive); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("grow before any gather stalled: %v", err)
		}
		if n := evicted.Load(); n != 0 {
			t.Fatalf("%d evicted within half a second", n)
		}
		start := time.Now()
		if err := w.grow(t.Context(), chargeOf(1<<20), alive); err != nil {
			t.Fatal(err)
		}
		if evicted.Load() == 0 || time.Since(start) > 2*stallAge {
			t.Fatalf("%d evicted, room after %v", evicted.Load(), time.Since(start))
		}
		if _, peak, _ := b.stats(); peak > b.total {
			t.Fatalf("peak %d over %d", peak, b.total)
		}
	})
}

// TestRecvBudgetWaitEnds: a gather waiting for room returns when its
// context ends or its Carrier goes, holding what it held.
func TestRecvBudgetWaitEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRecvBudget(&Config{ReceiveBudget: 1 << 20, MaxMessageSize: 1 << 20})
		full := b.claim(srcAddr(1), func() {}, nil)
		if err := full.grow(t.Context(), b.total, alive); err != nil {
			t.Fatal(err)
		}
		w := b.claim(srcAddr(2), nil, nil)
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(time.Second / 10); cancel() }()
		if err := w.grow(ctx, 1, alive); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled: %v", err)
		}
		gone := make(chan struct{})
		var closed atomic.Bool
		live := func() (<-chan struct{}, bool) { return gone, !closed.Load() }
		go func() { time.Sleep(time.Second / 10); closed.Store(true); close(gone) }()
		if err := w.grow(t.Context(), 1, live); !errors.Is(err, errGone) {
			t.Fatalf("closed: %v", err)
		}
		if held, _, _ := b.stats(); held != b.total {
			t.Fatalf("held %d, want %d", held, b.total)
		}
	})
}

// TestRecvBudgetOverLimit: a budget smaller than MaxMessageSize lowers
// the largest whole message to what it can hold.
func TestRecvBudgetOverLimit(t *testing.T) {
	b := newRecvBudget(&Config{ReceiveBudget: 1 << 20, MaxMessageSize: 16 << 20})
	if want := int64(1<<20 + gatherFree - 1); b.limit != want {
		t.Fatalf("limit %d, want %d", b.limit, want)
	}
	if b := newRecvBudget(&Config{}); b.total != 64<<20 || b.share != 16<<20 || b.limit != 16<<20 {
		t.Fatalf("defaults: total %d, share %d, limit %d", b.total, b.share, b.limit)
	}
	if newRecvBudget(&Config{ReceiveBudget: -1}) != nil {
		t.Fatal("a negative budget bounds")
	}
}

// TestRecvBudgetBacklog: gathers that hold the whole budget and read
// nothing, while their transients hold data for them (a starved reader,
// a loss under repair), are not evicted as stalled until stallAgeMax
// since they last read stallBytes; then they are, backlog or not. Those
// whose backlog ends are evicted a stallAge after it was last seen.
func TestRecvBudgetBacklog(t *testing.T) {
	for _, ends := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			b := newRecvBudget(&Config{ReceiveBudget: 4 << 20, MaxMessageSize: 1 << 20})
			var evicted atomic.Int32
			var backlog atomic.Bool
			backlog.Store(true)
			for i := range 6 {
				cl := b.claim(srcAddr(1+i%3), nil, backlog.Load)
				cl.evict = func() { evicted.Add(1); cl.settle(0, 0) }
				if err := cl.grow(t.Context(), chargeOf(1<<19), alive); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			w := b.claim(srcAddr(9), nil, nil)
			wait := stallAgeMax - stallAge/4
			if ends {
				wait = 2 * stallAge
			}
			ctx, cancel := context.WithTimeout(t.Context(), wait)
			defer cancel()
			if err := w.grow(ctx, chargeOf(1<<20), alive); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("grow while the stalled gathers' transients held data: %v", err)
			}
			if n := evicted.Load(); n != 0 {
				t.Fatalf("%d evicted within %v while their transients held data", n, wait)
			}
			limit := stallAgeMax + stallAge/2
			if ends {
				backlog.Store(false)
				limit = time.Since(start) + stallAge + stallAge/2
			}
			if err := w.grow(t.Context(), chargeOf(1<<20), alive); err != nil {
				t.Fatal(err)
			}
			if evicted.Load() == 0 || time.Since(start) > limit {
				t.Fatalf("backlog ends %v: %d evicted, room after %v, want by %v", ends, evicted.Load(), time.Since(start), limit)
			}
		})
	}
}

// TestRecvBudgetTrickle: gathers that hold the whole budget and read a
// trickle, 1 KiB every 100 ms, are evicted as stalled within a stallAge
// and a look; with a backlog at every look (a loss kept open), within
// stallAgeMax and a look.
func TestRecvBudgetTrickle(t *testing.T) {
	for _, open := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			b := newRecvBudget(&Config{ReceiveBudget: 4 << 20, MaxMessageSize: 1 << 20})
			var evicted atomic.Int32
			done := make(chan struct{})
			defer close(done)
			for i := range 6 {
				cl := b.claim(srcAddr(1+i%3), nil, func() bool { return open })
				gone := make(chan struct{})
				cl.evict = func() { evicted.Add(1); close(gone); cl.settle(0, 0) }
				if err := cl.grow(t.Context(), chargeOf(1<<19), alive); err != nil {
					t.Fatal(err)
				}
				go func() {
					for {
						select {
						case <-gone:
							return
						case <-done:
							return
						case <-time.After(100 * time.Millisecond):
							cl.noteRead(1 << 10)
						}
					}
				}()
			}
			start := time.Now()
			w := b.claim(srcAddr(9), nil, nil)
			if err := w.grow(t.Context(), chargeOf(1<<20), alive); err != nil {
				t.Fatal(err)
			}
			limit := stallAge + stallAge/2
			if open {
				limit = stallAgeMax + stallAge/2
			}
			if evicted.Load() == 0 || time.Since(start) > limit {
				t.Fatalf("loss kept open %v: %d evicted, room after %v, want by %v", open, evicted.Load(), time.Since(start), limit)
			}
		})
	}
}

// heldBy6 returns a budget whose whole room six stalled gathers with the
// given backlog hold, a gather w listed as waiting for room (as
// evictFor's callers are), and the count of gathers evicted.
func heldBy6(t *testing.T, backlog func() bool) (b *recvBudget, w *claim, evicted *atomic.Int32) {
	b = newRecvBudget(&Config{ReceiveBudget: 4 << 20, MaxMessageSize: 1 << 20})
	evicted = new(atomic.Int32)
	for i := range 6 {
		cl := b.claim(srcAddr(1+i%3), nil, backlog)
		cl.evict = func() { evicted.Add(1); cl.settle(0, 0) }
		if err := cl.grow(t.Context(), chargeOf(1<<19), alive); err != nil {
			t.Fatal(err)
		}
	}
	w = b.claim(srcAddr(9), nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.grow(ctx, chargeOf(1<<20), alive); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	return b, w, evicted
}

// TestRecvBudgetLate: time in which the process did not run (the
// budget's timer fired late) does not count on the gathers' stall
// clocks; the rest does.
func TestRecvBudgetLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, w, evicted := heldBy6(t, nil)
		time.Sleep(stallAge + stallAge/10)
		b.evictFor(w, true, stallAge/2) // half of that the process did not run
		time.Sleep(stallAge / 4)
		b.evictFor(w, true, 0)
		synctest.Wait()
		if n := evicted.Load(); n != 0 {
			t.Fatalf("%d evicted %v after their last read, %v of it the process's own stall", n, stallAge+stallAge*35/100, stallAge/2)
		}
		time.Sleep(stallAge / 4)
		b.evictFor(w, true, 0)
		synctest.Wait()
		if evicted.Load() == 0 {
			t.Fatal("none evicted once a stallAge of the peers' time passed")
		}
	})
}

// TestRecvBudgetStarved: gathers whose transients hold data they have
// not read (honest peers, their reader starved with the whole process)
// are not evicted while the process runs a quarter of the time (every
// timer fires 3 looks late), however long that lasts; once it runs on
// time, a gather that still reads nothing (a loss kept open) is evicted
// within stallAgeMax of that time and a look.
func TestRecvBudgetStarved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, w, evicted := heldBy6(t, func() bool { return true })
		const look, late = stallAge / 4, 3 * stallAge / 4
		for range 12 { // 12 s, 3 s of it on time
			time.Sleep(look + late)
			b.evictFor(w, true, late)
			synctest.Wait()
		}
		if n := evicted.Load(); n != 0 {
			t.Fatalf("%d evicted after %v in which the process ran %v", n, 12*(look+late), 12*look)
		}
		for range 4 { // on time again: 4 s of it in all
			time.Sleep(look)
			b.evictFor(w, true, 0)
		}
		synctest.Wait()
		if evicted.Load() == 0 {
			t.Fatalf("none evicted after %v on time reading nothing", 16*look)
		}
	})
}

// TestRecvBudgetLateOnce: two waiters whose timers fired late at once
// saw the same starvation: it is excused once, not twice.
func TestRecvBudgetLateOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRecvBudget(&Config{ReceiveBudget: 4 << 20, MaxMessageSize: 1 << 20})
		g := b.claim(srcAddr(1), func() {}, nil)
		if err := g.grow(t.Context(), chargeOf(1<<20), alive); err != nil {
			t.Fatal(err)
		}
		start := time.Now().UnixNano()
		time.Sleep(stallAge)
		b.evictFor(g, true, stallAge/2)
		b.evictFor(g, true, stallAge/2)
		b.mu.Lock()
		defer b.mu.Unlock()
		if d := time.Duration(g.paceLate - start); d != stallAge/2 {
			t.Fatalf("excused %v of a %v stall seen by two timers", d, stallAge/2)
		}
	})
}
