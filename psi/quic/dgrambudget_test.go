package quic

import (
	"context"
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
	ln, err := st.Listen(ctx, loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	l := ln.(*Listener)
	defer l.Close()
	go func() {
		for {
			if _, err := l.Accept(context.Background()); err != nil {
				return
			}
		}
	}()
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
