package quic

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/psi"
)

// BenchmarkUnreadSmallFrames measures what the receive budget does not
// count (docs/security.md, Open): a raw quic-go client forks 999
// streams on one connection and writes chunk bytes on each in turn, so
// that each STREAM frame carries one chunk, until the connection's
// window is full or 10 s passed; the listener (default budget) never
// reads. It reports the live heap's growth from the forks' arrival to
// the end (both ends, in this process: the client's side of the frames
// in flight too), and that per byte of the window the budget charged.
// Run it once: go test -run X -bench UnreadSmallFrames -benchtime 1x
// ./psi/quic
func BenchmarkUnreadSmallFrames(b *testing.B) {
	for _, chunk := range []int{1, 16, 128, 1024} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) { benchSmallFrames(b, chunk) })
	}
}

func benchSmallFrames(b *testing.B, chunk int) {
	ctx := testContext(b)
	ln, err := (&Stack{}).Listen(ctx, loopback, serverConfig())
	if err != nil {
		b.Fatal(err)
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
	qc := rawForker(b, ctx, netip.MustParseAddr("127.0.4.1"), l.Addr())
	// A fork header and a 1 MiB message's length: the chunks are its
	// first bytes.
	fork := append(appendHeader(nil, header{kind: kindFork, parent: 0, class: psi.Wine}), 0, 0x10, 0, 0)
	var ss []*quicgo.Stream
	for range 999 {
		s, err := qc.OpenStream()
		if err != nil {
			break
		}
		s.Write(fork)
		ss = append(ss, s)
	}
	time.Sleep(500 * time.Millisecond) // the forks arrive
	base := liveHeap()
	p := make([]byte, chunk)
	b.ResetTimer()
	for start := time.Now(); time.Since(start) < 10*time.Second; {
		blocked := 0
		for _, s := range ss {
			s.SetWriteDeadline(time.Now().Add(time.Millisecond))
			if n, _ := s.Write(p); n < len(p) {
				blocked++
			}
		}
		if blocked == len(ss) {
			break // the connection's window is full
		}
		time.Sleep(2 * time.Millisecond) // each chunk a frame of its own
	}
	time.Sleep(time.Second) // the last frames arrive
	b.StopTimer()
	grew := float64(liveHeap() - base)
	bs := l.BudgetStats()
	window := float64(bs.Held - int64(len(ss))*streamCost)
	b.ReportMetric(grew/float64(1<<20), "heap-MiB")
	b.ReportMetric(window/float64(1<<10), "window-KiB")
	b.ReportMetric(grew/window, "heap/window")
}
