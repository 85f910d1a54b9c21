package quic

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/psi"
)

// TestReceiveBudgetBoundsDatagrams: a peer opens 100 forks and sends
// 256 datagrams of 1,000 bytes to each and to its root, which nobody
// reads; the queued datagrams are charged to the listener's budget and
// dropped without room. Before, each transient queued up to 256 of them
// outside the budget: 27 MiB of heap from one connection against an 8
// MiB budget.
func TestReceiveBudgetBoundsDatagrams(t *testing.T) {
	const budget = 8 << 20
	ctx := testContext(t)
	st := &Stack{MemoryBudget: budget}
	l := budgetListener(t, ctx, st, nil, nil)
	base := liveHeap()
	pc, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 4, 9)})
	defer pc.Close()
	qc, err := quicgo.Dial(ctx, pc, net.UDPAddrFromAddrPort(l.Addr()), rawTLS(), &quicgo.Config{EnableDatagrams: true, MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	root, _ := qc.OpenStream()
	root.Write(appendHeader(nil, header{kind: kindRoot}))
	var ids []quicgo.StreamID
	ids = append(ids, root.StreamID())
	fork := append(appendHeader(nil, header{kind: kindFork, parent: 0, class: psi.Wine}), 0, 0, 0, 100, 'x')
	for range 100 {
		s, err := qc.OpenStream()
		if err != nil {
			break
		}
		s.Write(fork)
		ids = append(ids, s.StreamID())
	}
	time.Sleep(500 * time.Millisecond)
	payload := make([]byte, 1000)
	sent := 0
	for range 256 {
		for _, id := range ids {
			d := binary.AppendUvarint(nil, uint64(id))
			d = append(d, payload...)
			if qc.SendDatagram(d) == nil {
				sent++
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Give the datagrams time to arrive; this bounds nothing: a slow
	// host measures less.
	time.Sleep(2 * time.Second)
	full := liveHeap()
	bs := l.BudgetStats()
	t.Logf("%d streams, %d datagrams sent, %d dropped by the budget; heap %d KiB over the start; the budget held at most %d KiB of %d KiB",
		len(ids), sent, bs.DroppedDatagrams, (full-base)>>10, bs.Peak>>10, bs.Budget>>10)
	if bs.Peak > budget {
		t.Errorf("the budget held %d bytes, over its %d", bs.Peak, budget)
	}
	// Both ends are in this process: allow 2 MiB of state over the
	// budget.
	if full > base+budget+2<<20 {
		t.Errorf("heap grew by %d KiB, over the %d KiB budget and 2 MiB", (full-base)>>10, budget>>10)
	}
}

// TestReceiveBudgetChargesEarlyDatagrams: datagrams for a stream the
// peer has not opened yet, held until it comes (64 a connection), are
// charged to the listener's budget and dropped without room; their
// charge moves to the stream's queue when it comes, and goes back when
// it is refused and when the connection ends. Before, they were held
// outside the budget: it held the connection's window alone.
func TestReceiveBudgetChargesEarlyDatagrams(t *testing.T) {
	// A 1 MiB budget: an address's share is 64 KiB and the connection's
	// window 16 KiB.
	const budget = 1 << 20
	const size = 1000
	ctx := testContext(t)
	st := &Stack{MemoryBudget: budget}
	l := budgetListener(t, ctx, st, nil, nil)
	pc, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 4, 10)})
	defer pc.Close()
	qc, err := quicgo.Dial(ctx, pc, net.UDPAddrFromAddrPort(l.Addr()), rawTLS(), &quicgo.Config{EnableDatagrams: true, MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	root, _ := qc.OpenStream()
	root.Write(appendHeader(nil, header{kind: kindRoot}))
	// The budget's figures settle as packets arrive; a datagram lost on
	// loopback fails the test at ctx's end.
	await := func(what string, ok func(BudgetStats) bool) {
		t.Helper()
		for {
			bs := l.BudgetStats()
			if ok(bs) {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: the budget holds %d bytes, %d datagrams dropped", what, bs.Held, bs.DroppedDatagrams)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	const window = minWindow
	await("the connection", func(bs BudgetStats) bool { return bs.Held == window })
	payload := make([]byte, size)
	early := func(id quicgo.StreamID, n int) {
		d := append(binary.AppendUvarint(nil, uint64(id)), payload...)
		for range n {
			if err := qc.SendDatagram(d); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	fork := append(appendHeader(nil, header{kind: kindFork, parent: 0, class: psi.Wine}), 0, 0, 0, 1)
	// 40 datagrams for the client's next stream, 4, before it is
	// opened; then the stream, whose fork queues them, charged once.
	early(4, 40)
	await("40 datagrams held for stream 4", func(bs BudgetStats) bool { return bs.Held == window+40*size })
	s4, _ := qc.OpenStream()
	s4.Write(fork)
	await("stream 4", func(bs BudgetStats) bool { return bs.Held == window+40*size+streamCost })
	// 64 for stream 8: room for 5 of them in the share.
	const fit = (budget/16 - window - 40*size - streamCost) / size
	early(8, maxPending)
	await("64 datagrams for stream 8", func(bs BudgetStats) bool {
		return bs.Held == window+(40+fit)*size+streamCost && bs.DroppedDatagrams == maxPending-fit
	})
	// Stream 8 has no room for its fork: refused, its datagrams too.
	s8, _ := qc.OpenStream()
	s8.Write(fork)
	await("stream 8 refused", func(bs BudgetStats) bool {
		return bs.Held == window+40*size+streamCost && bs.RefusedStreams == 1
	})
	if bs := l.BudgetStats(); bs.Peak > budget/16 {
		t.Errorf("the budget held %d bytes for one address, over its share %d", bs.Peak, budget/16)
	}
	qc.CloseWithError(0, "")
	await("the connection's end", func(bs BudgetStats) bool { return bs.Held == 0 })
}
