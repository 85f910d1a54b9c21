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
			cls = append(cls, b.claim(srcAddr(i%3), func() { t.Error("evicted a gather that was reading") }))
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
			cl := b.claim(srcAddr(1+i%3), nil)
			cl.evict = func() { evicted.Add(1); cl.settle(0, 0) }
			if err := cl.grow(t.Context(), chargeOf(1<<19), alive); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second/2)
		defer cancel()
		w := b.claim(srcAddr(9), nil)
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
		full := b.claim(srcAddr(1), func() {})
		if err := full.grow(t.Context(), b.total, alive); err != nil {
			t.Fatal(err)
		}
		w := b.claim(srcAddr(2), nil)
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
