package quic

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
)

// TestReceiveBudgetBoundsReadBuffers: peers at 15 addresses, in 15 /24s
// so that together their shares are nearly the whole budget, each open a
// connection and fork 200 streams sending a message's first bytes; the
// application accepts every fork and reads it, so each has a read
// buffer. A full one (16 KiB) is charged to the budget while under half
// of it is used and a stream past that gets a small one, so the heap
// stays near the budget (12.4 to 13.3 MiB over the start). An honest
// client elsewhere still exchanges a message. Before, the buffers were
// outside the budget: 1,560 forks read took 37.2 MiB.
func TestReceiveBudgetBoundsReadBuffers(t *testing.T) {
	const budget = 8 << 20
	ctx := testContext(t)
	st := &Stack{MemoryBudget: budget}
	reading := make(chan struct{}, 4096)
	honest := make(chan psi.Transient, 1)
	l := budgetListener(t, ctx, st, nil, func(s psi.Transient) bool {
		if s.Path().Remote.Addr() == netip.MustParseAddr("127.0.0.1") {
			honest <- s
			return true
		}
		go func() { // read every fork, as an application serving them does
			for {
				f, err := s.AcceptFork(context.Background())
				if err != nil {
					return
				}
				go func() {
					reading <- struct{}{}
					buf := make([]byte, 64)
					for {
						if _, _, err := f.ReadMessage(context.Background(), buf); err != nil {
							return
						}
					}
				}()
			}
		}()
		return true
	})
	base := liveHeap()
	const conns, forks = 15, 200
	fork := append(appendHeader(nil, header{kind: kindFork, parent: 0, class: psi.Wine}), 0, 0, 0, 100, 'x')
	total := 0
	for i := range conns {
		qc := rawForker(t, ctx, netip.AddrFrom4([4]byte{127, 6, byte(i), 1}), l.Addr())
		total += openForks(qc, forks, fork)
	}
	// The forks must arrive and their readers start; give them time.
	// This wait bounds nothing: a slow host measures less.
	time.Sleep(2 * time.Second)
	full := liveHeap()
	bs := l.BudgetStats()
	t.Logf("%d forks opened, %d refused, %d read (%d with a small buffer); heap %d KiB over the start; the budget held %d KiB (peak %d KiB) of %d KiB",
		total, bs.RefusedStreams, len(reading), bs.SmallReadBuffers, (full-base)>>10, bs.Held>>10, bs.Peak>>10, bs.Budget>>10)
	if bs.Peak > budget {
		t.Errorf("the budget held %d bytes, over its %d", bs.Peak, budget)
	}
	// Both ends are in this process: a fork's state at both ends is
	// charged 4 KiB for about 4.9 KiB (streamCost), so allow half the
	// budget over it, and each connection 512 KiB.
	if limit := uint64(budget*3/2 + conns*512<<10); full > base+limit {
		t.Errorf("heap grew by %d KiB with %d forks read, over the %d KiB budget and the connections' state (%d KiB in all)",
			(full-base)>>10, uint64(total)-bs.RefusedStreams, budget>>10, limit>>10)
	}
	// An honest client at another address still forks and is read.
	c, err := st.Dial(ctx, l.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.(*Transient).Abort(nil)
	if err := c.WriteMessage(ctx, []byte("ping"), true, nil); err != nil {
		t.Fatal(err)
	}
	var srv psi.Transient
	select {
	case srv = <-honest:
	case <-ctx.Done():
		t.Fatal("the honest client's connection was not accepted")
	}
	if got, err := readAll(ctx, srv, 64); err != nil || string(got) != "ping" {
		t.Fatalf("the listener read %q, %v from an honest client", got, err)
	}
}
