package quic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

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
		for _, chunk := range []int{1, 16, 128, 200, 1024} {
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

// writeRound writes chunk on each stream, each in a STREAM frame of its
// own, and returns how many were taken whole. Each write waits at most
// wait (zero: as long as it takes).
func writeRound(ss []*quicgo.Stream, chunk []byte, wait time.Duration) int {
	sent := 0
	for _, s := range ss {
		if wait > 0 {
			s.SetWriteDeadline(time.Now().Add(wait))
		}
		if n, _ := s.Write(chunk); n == len(chunk) {
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
// accepts the connection and never its forks. The listener counts
// quic-go's heap behind the frames (129 bytes each, frameCost) and
// closes the connection as refused past 4 times its window (3,048
// frames); the heap after it is near the start (0.5 MiB). Without the
// count (the commit before it) quic-go kept every frame, about 125 bytes
// of heap a byte: 100,000 frames, the window full, took 12.1 MiB and the
// connection stayed open; the test failed.
func TestSmallFramesUnreadClosed(t *testing.T) {
	smallFramesClosed(t, &Stack{MemoryBudget: 8 << 20}, serverConfig(), 1, 0, true)
}

// TestSmallFramesLargeUnreadClosed is TestSmallFramesUnreadClosed with
// 130-byte frames: quic-go keeps each in a buffer of a whole packet
// (1,452 bytes), and the listener closes the connection after a few
// hundred of them. Before, frames of 128 bytes or more were not counted:
// the window filled (935 200-byte frames as it grew, 879 KiB of heap
// over the start), the connection stayed open and the test failed.
// Writes are 130 bytes, not more: a slow sender (the race detector)
// puts two or three queued writes of a stream in one frame, and 200-byte
// writes so merged cost under 4 bytes of heap a byte of window, which
// the count allows (CI: 929 writes sent, open).
func TestSmallFramesLargeUnreadClosed(t *testing.T) {
	smallFramesClosed(t, &Stack{MemoryBudget: 8 << 20}, serverConfig(), 130, 0, false)
}

// TestSmallFramesCreditNotCarried is TestSmallFramesUnreadClosed after
// the client sent 1 MiB on a fork of its own, which the application
// read: a frame is given back when the reads pass it, not for any
// byte read. Before, reads credited the connection by the byte, so the
// 1 MiB read let the client hold as many one-byte frames unread as its
// window took (over 100,000 here, about 130 bytes of heap each): it
// stayed open and the test failed.
func TestSmallFramesCreditNotCarried(t *testing.T) {
	smallFramesClosed(t, &Stack{MemoryBudget: 8 << 20}, serverConfig(), 1, 1<<20, false)
}

// TestSmallFramesTracedClosed is TestSmallFramesUnreadClosed with
// DisableSmallFrameCount set and the listener's connections traced
// (Config.TraceDir): those are counted anyway. Only the close is
// checked: the traces take heap of their own.
func TestSmallFramesTracedClosed(t *testing.T) {
	cfg := serverConfig()
	cfg.TraceDir = t.TempDir()
	smallFramesClosed(t, &Stack{MemoryBudget: 8 << 20, DisableSmallFrameCount: true}, cfg, 1, 0, false)
}

// smallFramesClosed runs TestSmallFramesUnreadClosed on a listener of st
// with cfg and frames of chunk bytes, checking the heap if heap is set;
// with first, the client first sends first bytes on a fork the
// application reads, in writes of 64 KiB.
func smallFramesClosed(t *testing.T, st *Stack, cfg *psi.Config, chunk, first int, heap bool) {
	ctx := testContext(t)
	var read atomic.Int64
	l := budgetListener(t, ctx, st, cfg, func(s psi.Transient) bool {
		if first > 0 {
			go func() { // read the first fork only
				f, err := s.AcceptFork(ctx)
				if err != nil {
					return
				}
				buf := make([]byte, 64<<10)
				for {
					n, _, err := f.ReadMessage(ctx, buf)
					if read.Add(int64(n)); err != nil {
						return
					}
				}
			}()
		}
		return true
	})
	qc := rawForker(t, ctx, netip.MustParseAddr("127.0.4.2"), l.Addr())
	if first > 0 {
		bulk := smallForks(t, qc, 1)[0]
		for p, left := make([]byte, 64<<10), first; left > 0; left -= len(p) {
			if _, err := bulk.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		for read.Load() < int64(first) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
	}
	ss := smallForks(t, qc, 64)
	time.Sleep(500 * time.Millisecond) // the forks arrive; this bounds nothing
	base := liveHeap()
	limit := 100_000
	if testing.Short() {
		limit = 20_000
	}
	p := bytes.Repeat([]byte{'x'}, chunk)
	sent := 0
	for sent < limit && qc.Context().Err() == nil && ctx.Err() == nil {
		n := writeRound(ss, p, time.Millisecond)
		if n == 0 {
			break // the window is full
		}
		sent += n
	}
	grew := int64(liveHeap()) - int64(base)
	t.Logf("%d %d-byte frames sent; heap %d KiB over the start", sent, chunk, grew>>10)
	// Both ends are in this process. 3,072 frames take about 0.4 MiB,
	// 100,000 12 MiB.
	if heap && !testing.Short() && grew > 4<<20 {
		t.Errorf("heap grew by %d KiB with %d %d-byte frames sent, over 4 MiB", grew>>10, sent, chunk)
	}
	// The listener sees the frames after they are sent: wait for its
	// close (at most the test's context).
	select {
	case <-qc.Context().Done():
	case <-ctx.Done():
		t.Fatalf("the connection is still open with %d %d-byte STREAM frames sent and none read (budget: %+v)", sent, chunk, l.BudgetStats())
	}
	var ae *quicgo.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != codeRefused {
		t.Errorf("the connection ended with %v, want the listener's close as refused", err)
	}
	// After a bulk fork the window grew into the address's share, which
	// leaves some forks no room.
	if bs := l.BudgetStats(); bs.SmallFrameCloses != 1 || first == 0 && bs.RefusedStreams != 0 {
		t.Errorf("BudgetStats: %d connections closed for frames unread, want 1; %d forks refused, want 0", bs.SmallFrameCloses, bs.RefusedStreams)
	}
}

// readForks reads every fork of s as it comes, bufSize bytes at a time,
// waiting pause after each read (a slow reader), and adds what it read
// to read.
func readForks(ctx context.Context, s psi.Transient, bufSize int, pause time.Duration, read *atomic.Int64) {
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
				time.Sleep(pause)
			}
		}()
	}
}

// TestSmallFramesReadStayOpen: the same client writes one-byte frames
// on 64 forks, 15,360 in all, to the same listener (3,048 frames unread
// allowed), whose application reads each fork; each round of writes
// waits for the previous round to be read. The connection stays open:
// frames that are read do not count.
func TestSmallFramesReadStayOpen(t *testing.T) {
	framesReadStayOpen(t, netip.MustParseAddr("127.0.4.3"), 240, func(int) int { return 1 })
}

// TestSmallFramesBulkReadStayOpen is TestSmallFramesReadStayOpen with
// frames of 128 to 1,400 bytes (a packet's worth), 3.2 MB in all, over
// 30 times the frames' heap the window allows unread: frames that are
// read do not count, whatever their size.
func TestSmallFramesBulkReadStayOpen(t *testing.T) {
	sizes := []int{128, 200, 700, 1400}
	framesReadStayOpen(t, netip.MustParseAddr("127.0.4.4"), 80, func(r int) int { return sizes[r%len(sizes)] })
}

// framesReadStayOpen writes rounds of a frame of size(round) bytes on
// each of 64 forks from address from, each round once the previous one
// was read, and checks that the connection stays open.
func framesReadStayOpen(t *testing.T, from netip.Addr, rounds int, size func(round int) int) {
	const forks = 64
	ctx := testContext(t)
	var read atomic.Int64
	l := budgetListener(t, ctx, &Stack{MemoryBudget: 8 << 20}, nil, func(s psi.Transient) bool {
		go readForks(ctx, s, 64<<10, 0, &read)
		return false
	})
	qc := rawForker(t, ctx, from, l.Addr())
	ss := smallForks(t, qc, forks)
	var want int64
	for r := 1; r <= rounds; r++ {
		p := bytes.Repeat([]byte{'x'}, size(r))
		if n := writeRound(ss, p, 0); n != forks {
			t.Fatalf("round %d: %d of %d writes taken", r, n, forks)
		}
		want += int64(forks * len(p))
		for read.Load() < want {
			if err := context.Cause(qc.Context()); err != nil {
				t.Fatalf("round %d: the connection ended: %v", r, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("round %d: %d bytes read of %d", r, read.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := context.Cause(qc.Context()); err != nil {
		t.Errorf("the connection ended: %v", err)
	}
	if bs := l.BudgetStats(); bs.SmallFrameCloses != 0 || bs.RefusedStreams != 0 {
		t.Errorf("BudgetStats: %d connections closed for frames unread, %d forks refused, want none", bs.SmallFrameCloses, bs.RefusedStreams)
	}
}

// TestSmallFramesSlowReaderStayOpen: an honest client forks 4 streams
// and writes 2 MiB on each in messages of 64 KiB, as fast as the window
// lets it, to a listener (8 MiB budget: a 96 KiB window) whose
// application reads 4 KiB at a time and waits a millisecond after each
// read: the window stays full, of frames of a packet's worth, and the
// connection stays open.
func TestSmallFramesSlowReaderStayOpen(t *testing.T) {
	const forks, size, total = 4, 64 << 10, 2 << 20
	ctx := testContext(t)
	var read atomic.Int64
	st := &Stack{MemoryBudget: 8 << 20}
	l := budgetListener(t, ctx, st, nil, func(s psi.Transient) bool {
		go readForks(ctx, s, 4<<10, time.Millisecond, &read)
		return false
	})
	c, err := st.Dial(ctx, l.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.(*Transient).Abort(nil)
	if err := c.WriteMessage(ctx, []byte("root"), true, nil); err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte{'x'}, size)
	var wg sync.WaitGroup
	errs := make(chan error, forks)
	for range forks {
		wg.Go(func() {
			f, err := c.Fork(ctx, psi.Wine)
			if err != nil {
				errs <- err
				return
			}
			for range total / size {
				if err := f.WriteMessage(ctx, msg, true, nil); err != nil {
					errs <- err
					return
				}
			}
			errs <- f.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a fork's writes: %v (read %d bytes)", err, read.Load())
		}
	}
	if bs := l.BudgetStats(); bs.SmallFrameCloses != 0 {
		t.Errorf("BudgetStats: %d connections closed for frames unread, want none", bs.SmallFrameCloses)
	}
}

// TestSmallFramesDroppedStayOpen: the client forks 16 streams at a time
// and writes 32 one-byte frames on each, and the listener's application
// aborts each fork unread once they arrived; 13 rounds, 6,656 frames in
// all, twice what the 96 KiB window allows unread. The frames of a
// stream whose reading was cancelled go back once its final size is
// known (the client's quic-go resets it on STOP_SENDING), so the
// connection stays open. Before, they counted for the connection's
// life: it was closed as refused in the 7th round, and the test failed.
func TestSmallFramesDroppedStayOpen(t *testing.T) {
	const batch, frames, rounds = 16, 32, 13
	ctx := testContext(t)
	forks := make(chan psi.Transient, batch*rounds)
	l := budgetListener(t, ctx, &Stack{MemoryBudget: 8 << 20}, nil, func(s psi.Transient) bool {
		go func() {
			for {
				f, err := s.AcceptFork(ctx)
				if err != nil {
					return
				}
				forks <- f
			}
		}()
		return true
	})
	qc := rawForker(t, ctx, netip.MustParseAddr("127.0.4.5"), l.Addr())
	for r := 1; r <= rounds; r++ {
		ss := smallForks(t, qc, batch)
		for range frames {
			if n := writeRound(ss, []byte{'x'}, 0); n != batch {
				t.Fatalf("round %d: %d of %d writes taken (%v)", r, n, batch, context.Cause(qc.Context()))
			}
		}
		time.Sleep(100 * time.Millisecond) // the frames arrive; a late one is not counted
		for range batch {
			select {
			case f := <-forks:
				f.(*Transient).Abort(nil)
			case <-ctx.Done():
				t.Fatalf("round %d: forks not accepted", r)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // a close would arrive
	if err := context.Cause(qc.Context()); err != nil {
		t.Errorf("the connection ended: %v (budget: %+v)", err, l.BudgetStats())
	}
	if bs := l.BudgetStats(); bs.SmallFrameCloses != 0 {
		t.Errorf("BudgetStats: %d connections closed for frames unread, want none", bs.SmallFrameCloses)
	}
}

// TestFramesKeptUntilForgotten: a stream psi/quic is done with stays
// charged until quic-go forgets it, as the MAX_STREAMS frames it sends
// show, since quic-go keeps a cancelled stream's frames with it. A peer
// that sends frames past a header not yet sent, gets the stream
// cancelled and resets it, and never acknowledges our reset (so that
// quic-go keeps the stream), keeps the frames charged.
func TestFramesKeptUntilForgotten(t *testing.T) {
	var f frames
	f.init(func() {}, 1000, 1)
	f.trace(nil)
	f.allow(1 << 20)
	stream := func(id quicgo.StreamID, off, n int64, fin bool) {
		f.observe(qlog.PacketReceived{Frames: []qlog.Frame{{Frame: &qlog.StreamFrame{StreamID: id, Offset: off, Length: n, Fin: fin}}}})
	}
	forgot := func(n int) {
		fr := &qlog.MaxStreamsFrame{Type: streamTypeBidi, MaxStreamNum: 1000}
		for range n { // its type is quic-go's internal one
			fr.MaxStreamNum++
		}
		f.observe(qlog.PacketSent{Frames: []qlog.Frame{{Frame: fr}}})
	}
	held := func(want int64) {
		t.Helper()
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.held != want {
			t.Fatalf("%d bytes of frames held, want %d", f.held, want)
		}
	}
	for i := range int64(100) {
		stream(4, 20+i, 1, false)
	}
	want := 100 * frameCost(1)
	held(want)
	f.opened(0)
	f.opened(4)
	f.cancel(4)
	held(want)
	f.observe(qlog.PacketReceived{Frames: []qlog.Frame{{Frame: &qlog.ResetStreamFrame{StreamID: 4, FinalSize: 120}}}})
	held(want) // done, not forgotten
	stream(0, 0, 10, true)
	held(want + frameCost(10))
	f.readStream(0, 10, io.EOF)
	held(want)
	forgot(1) // the stream holding nothing first
	held(want)
	stream(4, 0, 20, false) // done with: not counted
	held(want)
	forgot(2)
	held(0)
}
