package quic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/psi"
)

// BenchmarkUnreadSmallFrames measures quic-go's memory behind STREAM
// frames nobody reads (docs/security.md, Open): a raw
// quic-go client forks 999 streams on one connection and writes chunk
// bytes on each in turn, so that each STREAM frame carries one chunk,
// until the connection's window is full, the listener closed it, or 10
// s passed; the listener (default budget; count=false sets
// Stack.DisableSmallFrameCount) never reads. It reports the
// live heap's growth from the forks' arrival to the end (both ends, in
// this process: the client's side of the frames in flight too), that
// per byte of the window the budget charged (its peak), and whether the
// listener closed the connection for small frames unread (closed).
// Run it once: go test -run X -bench UnreadSmallFrames -benchtime 1x
// ./psi/quic
func BenchmarkUnreadSmallFrames(b *testing.B) {
	for _, count := range []bool{false, true} {
		for _, chunk := range []int{1, 16, 128, 1024} {
			b.Run(fmt.Sprintf("count=%v/chunk=%d", count, chunk), func(b *testing.B) { benchSmallFrames(b, count, chunk) })
		}
	}
}

func benchSmallFrames(b *testing.B, count bool, chunk int) {
	ctx := testContext(b)
	l := budgetListener(b, ctx, &Stack{DisableSmallFrameCount: !count}, nil, nil)
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
			break // the connection's window is full, or it was closed
		}
		time.Sleep(2 * time.Millisecond) // each chunk a frame of its own
	}
	time.Sleep(time.Second) // the last frames arrive
	b.StopTimer()
	grew := float64(int64(liveHeap()) - int64(base))
	bs := l.BudgetStats()
	window := float64(bs.Peak - int64(len(ss))*streamCost)
	b.ReportMetric(grew/float64(1<<20), "heap-MiB")
	b.ReportMetric(window/float64(1<<10), "window-KiB")
	b.ReportMetric(grew/window, "heap/window")
	b.ReportMetric(float64(bs.SmallFrameCloses), "closed")
}

// smallForks opens n forks on qc, each sending its header and a 1 MiB
// message's length, so that what follows are the message's first bytes.
func smallForks(t *testing.T, qc *quicgo.Conn, n int) []*quicgo.Stream {
	t.Helper()
	fork := append(appendHeader(nil, header{kind: kindFork, parent: 0, class: psi.Wine}), 0, 0x10, 0, 0)
	var ss []*quicgo.Stream
	for range n {
		s, err := qc.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(fork); err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	return ss
}

// writeRound writes one byte on each stream, each in a STREAM frame of
// its own, and returns how many were taken. Each write waits at most
// wait (zero: as long as it takes).
func writeRound(ss []*quicgo.Stream, wait time.Duration) int {
	sent := 0
	for _, s := range ss {
		if wait > 0 {
			s.SetWriteDeadline(time.Now().Add(wait))
		}
		if n, _ := s.Write([]byte{'x'}); n == 1 {
			sent++
		}
	}
	time.Sleep(2 * time.Millisecond) // the frames leave before the next round's
	return sent
}

// TestSmallFramesUnreadClosed: a raw quic-go client forks 64 streams
// (what the budget's share for its address holds) and writes one byte
// on each in turn, so that each STREAM frame carries one, to a listener
// (counting by default, 8 MiB budget: a 96 KiB window) whose application
// accepts the connection and never its forks. The listener counts the
// small frames against the bytes read and closes the connection as
// refused past its window's 3,072 (windowPerFrame); the heap after it
// is near the start (0.3 MiB). Without the count (the commit before
// it) quic-go kept every frame, about 125 bytes of heap a byte:
// 100,000 frames, the window full, took 12.1 MiB and the connection
// stayed open; the test failed.
func TestSmallFramesUnreadClosed(t *testing.T) {
	smallFramesClosed(t, &Stack{MemoryBudget: 8 << 20}, serverConfig(), true)
}

// TestSmallFramesTracedClosed is TestSmallFramesUnreadClosed with
// DisableSmallFrameCount set and the listener's connections traced
// (Config.TraceDir): those are counted anyway. Only the close is
// checked: the traces take heap of their own.
func TestSmallFramesTracedClosed(t *testing.T) {
	cfg := serverConfig()
	cfg.TraceDir = t.TempDir()
	smallFramesClosed(t, &Stack{MemoryBudget: 8 << 20, DisableSmallFrameCount: true}, cfg, false)
}

// smallFramesClosed runs TestSmallFramesUnreadClosed on a listener of st
// with cfg, checking the heap if heap is set.
func smallFramesClosed(t *testing.T, st *Stack, cfg *psi.Config, heap bool) {
	ctx := testContext(t)
	l := budgetListener(t, ctx, st, cfg, func(psi.Transient) bool { return true })
	qc := rawForker(t, ctx, netip.MustParseAddr("127.0.4.2"), l.Addr())
	ss := smallForks(t, qc, 64)
	time.Sleep(500 * time.Millisecond) // the forks arrive; this bounds nothing
	base := liveHeap()
	limit := 100_000
	if testing.Short() {
		limit = 20_000
	}
	sent := 0
	for sent < limit && qc.Context().Err() == nil && ctx.Err() == nil {
		n := writeRound(ss, time.Millisecond)
		if n == 0 {
			break // the window is full
		}
		sent += n
	}
	grew := int64(liveHeap()) - int64(base)
	t.Logf("%d one-byte frames sent; heap %d KiB over the start", sent, grew>>10)
	// Both ends are in this process. 3,072 frames take about 0.4 MiB,
	// 100,000 12 MiB.
	if heap && !testing.Short() && grew > 4<<20 {
		t.Errorf("heap grew by %d KiB with %d one-byte frames sent, over 4 MiB", grew>>10, sent)
	}
	// The listener sees the frames after they are sent: wait for its
	// close (at most the test's context).
	select {
	case <-qc.Context().Done():
	case <-ctx.Done():
		t.Fatalf("the connection is still open with %d one-byte STREAM frames sent and none read (budget: %+v)", sent, l.BudgetStats())
	}
	var ae *quicgo.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != codeRefused {
		t.Errorf("the connection ended with %v, want the listener's close as refused", err)
	}
	if bs := l.BudgetStats(); bs.SmallFrameCloses != 1 || bs.RefusedStreams != 0 {
		t.Errorf("BudgetStats: %d connections closed for small frames, want 1; %d forks refused, want 0", bs.SmallFrameCloses, bs.RefusedStreams)
	}
}

// readForks reads every fork of s as it comes, bufSize bytes at a time,
// and adds what it read to read.
func readForks(ctx context.Context, s psi.Transient, bufSize int, read *atomic.Int64) {
	defer s.Close()
	for {
		f, err := s.AcceptFork(ctx)
		if err != nil {
			return
		}
		go func() {
			defer f.Close()
			buf := make([]byte, bufSize)
			for {
				n, _, err := f.ReadMessage(ctx, buf)
				read.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
}

// TestSmallFramesReadStayOpen: the same client writes one-byte frames
// on 64 forks, 15,360 in all, to the same listener (3,072 small frames
// unread allowed), whose application reads each fork; each round of
// writes waits for the previous round to be read. The connection stays
// open: frames that are read do not count.
func TestSmallFramesReadStayOpen(t *testing.T) {
	const forks, rounds = 64, 240
	ctx := testContext(t)
	var read atomic.Int64
	l := budgetListener(t, ctx, &Stack{MemoryBudget: 8 << 20}, nil, func(s psi.Transient) bool {
		go readForks(ctx, s, 64, &read)
		return false
	})
	qc := rawForker(t, ctx, netip.MustParseAddr("127.0.4.3"), l.Addr())
	ss := smallForks(t, qc, forks)
	for r := 1; r <= rounds; r++ {
		if n := writeRound(ss, 0); n != forks {
			t.Fatalf("round %d: %d of %d writes taken", r, n, forks)
		}
		for read.Load() < int64(r*forks) {
			if err := context.Cause(qc.Context()); err != nil {
				t.Fatalf("round %d: the connection ended: %v", r, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("round %d: %d bytes read of %d", r, read.Load(), r*forks)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := context.Cause(qc.Context()); err != nil {
		t.Errorf("the connection ended: %v", err)
	}
	if bs := l.BudgetStats(); bs.SmallFrameCloses != 0 || bs.RefusedStreams != 0 {
		t.Errorf("BudgetStats: %d connections closed for small frames, %d forks refused, want none", bs.SmallFrameCloses, bs.RefusedStreams)
	}
}
