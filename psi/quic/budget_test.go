package quic

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// liveHeap is the live heap after two collections (a sync.Pool keeps
// what was put in it through one).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// budgetListener listens on st with cfg (serverConfig when nil) and
// accepts its connections until it is closed, handing each to serve on
// the accepting goroutine; serve reports whether to hold it (nil: each
// is dropped). At the test's end the listener is closed and every
// connection held aborted.
func budgetListener(t testing.TB, ctx context.Context, st *Stack, cfg *psi.Config, serve func(psi.Transient) (hold bool)) *Listener {
	t.Helper()
	if cfg == nil {
		cfg = serverConfig()
	}
	ln, err := st.Listen(ctx, loopback, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := ln.(*Listener)
	var mu sync.Mutex
	var held []psi.Transient
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, s := range held {
			s.(*Transient).Abort(nil)
		}
	})
	go func() {
		for {
			s, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			if serve != nil && serve(s) {
				mu.Lock()
				held = append(held, s)
				mu.Unlock()
			}
		}
	}()
	return l
}

// TestReceiveBudgetBoundsUnread: peers at 16 addresses, in 16 /24s,
// dial 4 connections each and write 1 MiB on each root to a listener
// whose application accepts them all and never reads. With an 8 MiB
// MemoryBudget the listener's windows never hold more than 8 MiB, and
// the live heap grows by no more than that and 512 KiB for each
// connection's state at both ends (windows 4.1 to 4.6 MiB, heap 11 to
// 18 MiB). On the commit before the budget (quic-go's 768 KiB a
// connection) the heap grew by 56.7 MiB and the test failed.
func TestReceiveBudgetBoundsUnread(t *testing.T) {
	const (
		budget  = 8 << 20
		sources = 16
		each    = 4
		size    = 1 << 20
	)
	ctx := testContext(t)
	st := &Stack{MemoryBudget: budget}
	l := budgetListener(t, ctx, st, nil, func(psi.Transient) bool { return true })
	base := liveHeap()
	msg := make([]byte, size)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var dmu sync.Mutex
	var opened, refused, timedOut int
	var other []error
	for i := range sources {
		cfg := clientConfig()
		cfg.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(10 + i), 0, 1}), 0)
		for range each {
			wg.Go(func() {
				c, err := st.Dial(ctx, l.Addr(), cfg)
				dmu.Lock()
				switch {
				case err == nil:
					opened++
				case errors.Is(err, post.ErrRefused):
					refused++
				case errors.Is(err, post.ErrTimeout):
					timedOut++ // a loaded host; not what is tested
				default:
					other = append(other, err)
				}
				dmu.Unlock()
				if err != nil {
					return
				}
				defer c.(*Transient).Abort(nil)
				c.WriteMessage(wctx, msg, true, nil) // blocks once the window is full
				<-wctx.Done()
			})
		}
	}
	// The writers fill the windows the listener gave; give them time to.
	// This wait bounds nothing: a slow host measures a smaller heap.
	time.Sleep(3 * time.Second)
	full := liveHeap()
	bs := l.BudgetStats()
	stop()
	wg.Wait()
	t.Logf("%d connections, %d refused, %d timed out; windows held %d KiB (peak %d KiB) of %d KiB, %d refused by the budget; heap %d KiB before, %d KiB full",
		opened, refused, timedOut, bs.Held>>10, bs.Peak>>10, bs.Budget>>10, bs.Refused, base>>10, full>>10)
	if len(other) > 0 {
		t.Errorf("dials failed otherwise than with post.ErrRefused: %v", other)
	}
	if bs.Peak > budget {
		t.Errorf("windows held %d bytes at most, over the %d-byte budget", bs.Peak, budget)
	}
	// Both ends of every connection are in this process: allow each
	// pair 512 KiB of state (about 240 KiB measured) on top of the
	// budget.
	if limit := uint64(budget + opened*512<<10); full > base+limit {
		t.Errorf("heap grew by %d KiB with %d connections unread, over the %d KiB budget and their state (%d KiB in all)",
			(full-base)>>10, opened, budget>>10, limit>>10)
	}
}

// TestReceiveBudgetGivesBack: what a connection held goes back once it
// ended; the copy of a whole message it left unread (keepRest) is
// charged beside the window, and stays charged, alone, until it is read.
// Before, the copy was not charged and the window stayed charged for it.
func TestReceiveBudgetGivesBack(t *testing.T) {
	ctx := testContext(t)
	st := &Stack{}
	scfg := serverConfig()
	scfg.IdleTimeout = time.Second
	cli, srv, ln := pair(t, st, scfg, clientConfig())
	l := ln.(*Listener)
	if held := l.BudgetStats().Held; held != fullWindow {
		t.Fatalf("one connection holds %d bytes, want %d", held, fullWindow)
	}
	msg := bytes.Repeat([]byte("x"), 100<<10)
	if err := cli.WriteMessage(ctx, msg, true, nil); err != nil {
		t.Fatal(err)
	}
	// The whole stream arrives; the client's Close returns once the
	// listener's stack has it, then its connection ends without a word.
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	// The copy was charged before the close was confirmed: the stream
	// with its header and the message's length, and a byte.
	held := l.BudgetStats().Held
	copied := held - fullWindow
	if copied <= int64(len(msg)) || copied > int64(len(msg))+64 {
		t.Fatalf("%d bytes held with a whole %d-byte message unread, want the window (%d) and its copy", held, len(msg), fullWindow)
	}
	cli.c.qc.CloseWithError(0, "")
	select {
	case <-srv.c.qc.Context().Done():
	case <-ctx.Done():
		t.Fatal("the listener's connection did not end")
	}
	// The budget hears of the end from quic-go's context, asynchronously.
	for l.rb.of(srv.c.qc.Context()) != nil {
		if ctx.Err() != nil {
			t.Fatal("the budget did not see the connection end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if held := l.BudgetStats().Held; held != copied {
		t.Fatalf("%d bytes held for the unread message once the connection ended, want its copy, %d", held, copied)
	}
	got, err := readAll(ctx, srv, 64<<10)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(msg))
	}
	srv.Close()
	for held := l.BudgetStats().Held; held != 0; held = l.BudgetStats().Held {
		if ctx.Err() != nil {
			t.Fatalf("%d bytes held once the message was read and the connection ended", held)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReceiveBudgetUnkeptWaitsForReader: a whole stream that arrived
// unread is not copied when the budget has no room for the copy; the
// peer's Close then waits until the application has read it, and
// returns nil once it did.
func TestReceiveBudgetUnkeptWaitsForReader(t *testing.T) {
	ctx := testContext(t)
	// A 256 KiB budget: an address's share, 16 KiB, is its connection's
	// window.
	st := &Stack{MemoryBudget: 256 << 10}
	cli, srv, ln := pair(t, st, serverConfig(), clientConfig())
	l := ln.(*Listener)
	msg := bytes.Repeat([]byte("x"), 4<<10)
	if err := cli.WriteMessage(ctx, msg, true, nil); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- cli.Close() }()
	for l.BudgetStats().UnkeptStreams == 0 {
		if ctx.Err() != nil {
			t.Fatal("the whole stream was copied beyond the budget's room")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-closed:
		t.Fatalf("the client's Close returned (%v) before the message was read or copied", err)
	default:
	}
	if got, err := readAll(ctx, srv, 64<<10); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(msg))
	}
	if _, _, err := srv.ReadMessage(ctx, make([]byte, 8)); err != io.EOF {
		t.Fatalf("after the message: %v, want io.EOF", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("the client's Close: %v", err)
	}
	if bs := l.BudgetStats(); bs.Peak > bs.Budget/16 {
		t.Errorf("the budget held %d bytes for one address, over its share %d", bs.Peak, bs.Budget/16)
	}
}
