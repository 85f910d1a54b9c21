package carrier_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/psitest"
)

// budgetSink starts a Sink on one stack with the given receive budget
// and message limit; tune, if any, adjusts its configuration.
func budgetSink(t *testing.T, stack string, budget, max int64, tune ...func(*carrier.Config)) *carrier.Sink {
	t.Helper()
	scfg := serverConfig()
	scfg.ReceiveBudget, scfg.MaxMessageSize = budget, max
	for _, f := range tune {
		f(scfg)
	}
	scfg.Policy.Stack(stack, policy.Require)
	if stack == "fsp" {
		// FSP's own windows grow to 4 MiB a connection, bounded by the
		// stack's MemoryBudget; keep them at 512 KiB, so that the heap
		// shows what the Sink holds.
		scfg.Stacks = []psi.Stack{&fsp.Stack{Base: &fsp.Config{ReceiveWindow: 512 << 10}}}
	}
	s, err := carrier.NewSink(ctxT(t), localAny, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sourceAt initiates a Carrier to s from the loopback address from;
// tune, if any, adjusts its configuration.
func sourceAt(t *testing.T, ctx context.Context, s *carrier.Sink, stack string, from netip.Addr, tune ...func(*carrier.Config)) *carrier.Carrier {
	t.Helper()
	ccfg := clientConfig()
	ccfg.Local = post.Local{Addr: netip.AddrPortFrom(from, 0)}
	for _, f := range tune {
		f(ccfg)
	}
	ccfg.Policy.Stack(stack, policy.Require)
	if stack == "fsp" {
		// FSP copies what it sends into its send buffer, 8 MiB by
		// default: keep the peers' side small, so that the heap shows
		// the Sink's.
		ccfg.Stacks = []psi.Stack{&fsp.Stack{Base: &fsp.Config{SendBuffer: 256 << 10}}}
	}
	c, err := carrier.Initiate(ctx, s.Listener().Remote("localhost"), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Abort() })
	return c
}

// starvedTimeouts gives the stacks handshake and idle timeouts for a
// starved host: 17 dials at once under -race with four CPU hogs on 2
// cores saw QUIC give up a handshake after the default 10 s ("no recent
// network activity"), while the test's context still ran.
func starvedTimeouts(c *carrier.Config) {
	c.Transient.HandshakeTimeout = time.Minute
	c.Transient.IdleTimeout = 2 * time.Minute
}

// liveHeap is the live heap after two collections (a sync.Pool keeps
// what was put in it through one).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSinkReceiveBudget: many peers, from four addresses, each send one
// message near the limit to a Sink nobody reads. The Sink gathers and
// queues no more than its ReceiveBudget; the stacks' flow control holds
// the rest at the senders, and the live heap stays far below what the
// messages add up to (before the budget, the Sink gathered every one:
// 16 peers, 4 MiB messages, 64 MiB more heap). Once the application
// reads, every message arrives whole, and so does a small one sent
// meanwhile from a fifth address. The heap also holds the stacks'
// windows (FSP's set to 512 KiB a connection here) and the peers' own
// side (FSP's send buffers: most of its figure): 15 to 40 MiB over the
// start; before the budget, 85 to 91 MiB.
func TestSinkReceiveBudget(t *testing.T) {
	for _, stack := range benchStacks {
		t.Run(stack, func(t *testing.T) { testSinkReceiveBudget(t, stack) })
	}
}

func testSinkReceiveBudget(t *testing.T, stack string) {
	const (
		peers  = 16
		size   = 4<<20 - 1 // a 4 MiB gather buffer each, the limit
		budget = 8 << 20
	)
	s := budgetSink(t, stack, budget, 4<<20, starvedTimeouts)
	// The context only stops a hang (an honest gather evicted, whose
	// message never comes): it ends once no dial, flush or message
	// completed for a minute, not at a fixed time, a speed assertion.
	// Under -race on a 2-core host at load 17-30 the dials took up to
	// 23 s and the reads up to 57 s more.
	var done atomic.Int64
	ctx := psitest.ProgressContext(t, &done, time.Minute)
	base := liveHeap()
	msg := random(size) // shared: the senders hold no copy of their own
	var wg sync.WaitGroup
	errs := make(chan error, peers)
	for i := range peers {
		src := sourceAt(t, ctx, s, stack, netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i%4)}), starvedTimeouts)
		done.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := &post.Message{Content: msg}
			if err := src.SendMsg(ctx, m); err != nil {
				errs <- err
				return
			}
			err := src.Flush(ctx)
			done.Add(1)
			errs <- err
		}()
	}
	legit := sourceAt(t, ctx, s, stack, netip.MustParseAddr("127.0.0.20"), starvedTimeouts)
	if err := legit.Send(ctx, []byte("legit")); err != nil {
		t.Fatal(err)
	}
	// Nobody reads: watch the heap and the budget while the peers push
	// for as long as their messages take to send unhindered, then more.
	peak, held := watchHeap(s, 3*time.Second)
	grew := int64(liveHeap()) - int64(base)
	st := s.Listener().Stats()
	t.Logf("%s: %d peers × %d B to an unread Sink: live heap %.1f MiB over the start after 3 s (%.1f MiB at most, garbage included); budget %d MiB, held %.1f MiB at most (%.1f MiB by the stats)",
		stack, peers, size, float64(grew)/(1<<20), float64(int64(peak)-int64(base))/(1<<20), budget>>20, float64(held)/(1<<20), float64(st.ReceivePeak)/(1<<20))
	if st.ReceivePeak > budget {
		t.Errorf("the budget held %d bytes, over its %d", st.ReceivePeak, budget)
	}
	// Without the budget the Sink holds every message, 64 MiB, and
	// the stacks' windows and the peers' side come on top: 85 to 91 MiB.
	if limit := int64(peers * size); grew > limit {
		t.Errorf("live heap grew %.1f MiB with nobody reading, over %.1f MiB", float64(grew)/(1<<20), float64(limit)/(1<<20))
	}
	got, small := 0, false
	for got < peers || !small {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v (%v; the budget evicted %d gathers as stalled)", got, err, context.Cause(ctx), s.Listener().Stats().ReceiveEvicted)
		}
		done.Add(1)
		switch {
		case string(m.Content) == "legit":
			small = true
		case bytes.Equal(m.Content, msg):
			got++
		default:
			t.Fatalf("a message of %d bytes", len(m.Content))
		}
	}
	wg.Wait()
	for range peers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Listener().Stats(); st.ReceiveHeld != 0 || st.ReceiveEvicted != 0 {
		t.Errorf("once all were read: %d bytes held, %d evicted", st.ReceiveHeld, st.ReceiveEvicted)
	}
}

// watchHeap returns the largest live heap (as of the last collection,
// or in use if less) and ReceiveHeld seen over d.
func watchHeap(s *carrier.Sink, d time.Duration) (heap uint64, held int64) {
	sm := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		metrics.Read(sm)
		heap = max(heap, min(sm[0].Value.Uint64(), sm[1].Value.Uint64()))
		held = max(held, s.Listener().Stats().ReceiveHeld)
		time.Sleep(20 * time.Millisecond)
	}
	runtime.GC()
	metrics.Read(sm)
	return max(heap, sm[0].Value.Uint64()), held
}

// TestReceiveBudgetStalled: peers at four addresses each start two
// messages near the limit and stop halfway, holding their Carriers
// open, more than the budget holds. They must not lock others out: a
// small message gets in at once, and a large one from another address
// once the stalled gathers are evicted.
func TestReceiveBudgetStalled(t *testing.T) {
	for _, stack := range benchStacks {
		t.Run(stack, func(t *testing.T) { testReceiveBudgetStalled(t, stack, false) })
	}
}

// TestReceiveBudgetTrickle: as TestReceiveBudgetStalled, but the peers
// go on sending a trickle, 1 KiB every 100 ms (slowloris): they are
// evicted all the same, and the large message gets in.
func TestReceiveBudgetTrickle(t *testing.T) {
	for _, stack := range benchStacks {
		t.Run(stack, func(t *testing.T) { testReceiveBudgetStalled(t, stack, true) })
	}
}

func testReceiveBudgetStalled(t *testing.T, stack string, trickle bool) {
	const budget = 4 << 20
	s := budgetSink(t, stack, budget, 1<<20)
	ctx := confCtx(t, 60*time.Second)
	var writers []*carrier.MessageWriter
	var trickling sync.WaitGroup
	stop := make(chan struct{})
	halt := sync.OnceFunc(func() { close(stop); trickling.Wait() })
	defer halt()
	for i := range 8 {
		src := sourceAt(t, ctx, s, stack, netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i%4)}))
		w, err := src.NewMessageWriter(ctx, post.Properties{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, 3<<18)); err != nil {
			t.Fatal(err)
		}
		writers = append(writers, w)
		if trickle {
			// The writer is this goroutine's until stop: a MessageWriter
			// is not for concurrent calls.
			trickling.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := w.Write(make([]byte, 1<<10)); err != nil {
						return // evicted
					}
				}
			})
		}
	}
	// Until the budget is full of half messages.
	for s.Listener().Stats().ReceivePeak < budget/2 {
		if ctx.Err() != nil {
			t.Fatalf("the stalled peers never filled the budget: %d bytes held", s.Listener().Stats().ReceivePeak)
		}
		time.Sleep(10 * time.Millisecond)
	}
	small := sourceAt(t, ctx, s, stack, netip.MustParseAddr("127.0.0.20"))
	if err := small.Send(ctx, []byte("small")); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Receive(ctx); err != nil || string(m.Content) != "small" {
		t.Fatalf("small message past a full budget: %v %v", err, m)
	}
	large := sourceAt(t, ctx, s, stack, netip.MustParseAddr("127.0.0.21"))
	want := random(3 << 18)
	if err := large.Send(ctx, want); err != nil {
		t.Fatal(err)
	}
	m, err := s.Receive(ctx)
	if err != nil || !bytes.Equal(m.Content, want) {
		t.Fatalf("large message past stalled peers: %v (%d bytes)", err, contentLen(m))
	}
	st := s.Listener().Stats()
	t.Logf("%s (trickle %v): peak %.1f MiB of a %d MiB budget, %d stalled Carriers evicted", stack, trickle, float64(st.ReceivePeak)/(1<<20), budget>>20, st.ReceiveEvicted)
	if st.ReceiveEvicted == 0 {
		t.Error("no stalled gather was evicted")
	}
	if st.ReceivePeak > budget {
		t.Errorf("the budget held %d bytes, over its %d", st.ReceivePeak, budget)
	}
	halt()
	for _, w := range writers {
		w.Abort()
	}
}

// TestReceiveBudgetGivenBack: whatever way a message is read on an
// accepted Carrier (whole, in parts, whole past the budget and then in
// parts), the Listener's budget holds nothing once it is read.
func TestReceiveBudgetGivenBack(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		scfg := serverConfig()
		scfg.ReceiveBudget = 512 << 10
		scfg.Policy.Stack(stack, policy.Require)
		l := listen(t, scfg)
		ctx := ctxT(t)
		ccfg := clientConfig()
		ccfg.Policy.Stack(stack, policy.Require)
		c, err := carrier.Initiate(ctx, l.Remote("localhost"), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held := func(what string) {
			t.Helper()
			if st := l.Stats(); st.ReceiveHeld != 0 {
				t.Fatalf("after %s: %d bytes held", what, st.ReceiveHeld)
			}
		}
		small, large := random(400<<10), random(1<<20)
		c.Send(ctx, small)
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if m, err := s.Receive(ctx); err != nil || !bytes.Equal(m.Content, small) {
			t.Fatalf("whole: %v", err)
		}
		held("a whole message")
		c.Send(ctx, large)
		if got := readParts(t, ctx, s, 100<<10); !bytes.Equal(got, large) {
			t.Fatal("parts differ")
		}
		held("a message in parts")
		c.Send(ctx, large)
		if _, err := s.Receive(ctx); !errors.Is(err, post.ErrMessageTooLarge) {
			t.Fatalf("a message past the budget: %v", err)
		}
		if got := readParts(t, ctx, s, 100<<10); !bytes.Equal(got, large) {
			t.Fatal("parts after ErrMessageTooLarge differ")
		}
		held("a message past the budget, then in parts")
		if st := l.Stats(); st.ReceivePeak > scfg.ReceiveBudget || st.ReceivePeak == 0 {
			t.Fatalf("peak %d of %d", st.ReceivePeak, scfg.ReceiveBudget)
		}
	})
}
