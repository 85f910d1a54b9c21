package quic

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/psi"
)

// rawForker is a client that speaks psi/quic's stream headers over
// quic-go directly, so that its own state per stream is quic-go's alone.
func rawForker(t testing.TB, ctx context.Context, from netip.Addr, to netip.AddrPort) *quicgo.Conn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: from.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	qc, err := quicgo.Dial(ctx, pc, net.UDPAddrFromAddrPort(to), rawTLS(), &quicgo.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	root, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Write(appendHeader(nil, header{kind: kindRoot})); err != nil {
		t.Fatal(err)
	}
	return qc
}

// openForks opens n streams on qc, each sending b and never more.
func openForks(qc *quicgo.Conn, n int, b []byte) (opened int) {
	for range n {
		s, err := qc.OpenStream() // fails past the peer's stream limit
		if err != nil {
			return
		}
		if _, err := s.Write(b); err != nil {
			return
		}
		opened++
	}
	return
}

// TestReceiveBudgetBoundsForks: peers at four addresses each open a
// connection and fork every stream it allows (Stack.MaxStreams, 1,000),
// each sending a few bytes that the application never reads, or half
// of them only the first byte of a stream header; the
// listener accepts the connections and never their forks. Each fork's
// state (streamCost) is charged to the budget and a fork without room
// is refused, so the heap stays near the budget; a client elsewhere
// still forks and exchanges a message. Before, the forks' state was not
// counted and each had a 16 KiB read buffer from the start: 3,996 forks
// took 82 MiB against an 8 MiB budget (19 MiB with the buffer made on
// the first read and no charge; streams left without a header: 20 MiB
// of heap for 3,996, besides a goroutine's stack each, for the
// handshake timeout).
func TestReceiveBudgetBoundsForks(t *testing.T) {
	const budget = 8 << 20
	ctx := testContext(t)
	st := &Stack{MemoryBudget: budget}
	honest := make(chan string, 1)
	var roots atomic.Int64
	l := budgetListener(t, ctx, st, nil, func(s psi.Transient) bool {
		if s.Path().Remote.Addr() != netip.MustParseAddr("127.0.0.1") {
			roots.Add(1)
			return true
		}
		go func() { // the honest client
			defer s.Close()
			f, err := s.AcceptFork(ctx)
			if err != nil {
				honest <- err.Error()
				return
			}
			got, err := readAll(ctx, f, 64)
			if err != nil {
				honest <- err.Error()
				return
			}
			honest <- string(got)
		}()
		return false
	})
	base := liveHeap()
	const conns, forks = 4, 1000
	// Half the peers send a fork header and a 100-byte message's first
	// byte on each stream, half only the header's first byte: a stream
	// waiting for its header holds a goroutine and its state too.
	fork := append(appendHeader(nil, header{kind: kindFork, parent: 0, class: psi.Wine}), 0, 0, 0, 100, 'x')
	total := 0
	for i := range conns {
		qc := rawForker(t, ctx, netip.AddrFrom4([4]byte{127, 0, 4, byte(1 + i)}), l.Addr())
		b := fork
		if i%2 == 1 {
			b = fork[:1]
		}
		total += openForks(qc, forks, b)
	}
	// The forks' headers must arrive and be refused or charged; give
	// them time. This wait bounds nothing: a slow host measures less.
	time.Sleep(2 * time.Second)
	full := liveHeap()
	bs := l.BudgetStats()
	t.Logf("%d roots accepted, %d forks opened, %d refused by the budget; heap %d KiB over the start; the budget held %d KiB (peak %d KiB) of %d KiB",
		roots.Load(), total, bs.RefusedStreams, (full-base)>>10, bs.Held>>10, bs.Peak>>10, bs.Budget>>10)
	if bs.Peak > budget {
		t.Errorf("the budget held %d bytes, over its %d", bs.Peak, budget)
	}
	if bs.RefusedStreams == 0 {
		t.Errorf("no fork refused: %d forks of a few bytes fit an %d-byte budget", total, budget)
	}
	// Both ends are in this process; allow each connection 2 MiB of
	// state (the raw dialler's streams included) over the budget.
	if limit := uint64(budget + conns*2<<20); full > base+limit {
		t.Errorf("heap grew by %d KiB with %d forks unread, over the %d KiB budget and the connections' state (%d KiB in all)",
			(full-base)>>10, total, budget>>10, limit>>10)
	}
	// An honest client at another address still forks.
	c, err := st.Dial(ctx, l.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.(*Transient).Abort(nil)
	f, err := c.Fork(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteMessage(ctx, []byte("ping"), true, nil); err != nil {
		t.Fatal(err)
	}
	if got := <-honest; got != "ping" {
		t.Fatalf("the listener read %q from an honest fork", got)
	}
}
