package carrier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// The Carrier conformance suite: every stack, and the race between them,
// keeps the delivery and close contract of docs/design.md. The psi-level
// suite is psi/psitest.

// confStacks are the stacks the suite runs on; "race" races them all.
var confStacks = []string{"fsp", "quic", "tcp", "race"}

// pending names the cases a stack still fails because of a fix another
// change is making; the case skips with the reason until it lands.
// CONFORMANCE_PENDING=1 runs them anyway.
var pending = map[string]string{}

type confCase struct {
	name string
	run  func(t *testing.T, stack string)
}

var confCases = []confCase{
	{"Boundaries", confBoundaries},
	{"PartialMessages", confPartial},
	{"LargeMessageInParts", confLarge},
	{"WriterAbort", confWriterAbort},
	{"ForkBurst", confForkBurst},
	{"ForkWhileForksWait", confForkWhileForksWait},
	{"CloseDelivers", confCloseDelivers},
	{"CloseWithUnreadData", confCloseUnread},
	{"BothCloseUnread", confBothCloseUnread},
	{"CloseLivePeer", confCloseLive},
	{"Abort", confAbort},
	{"FlushReportsLoss", confFlushReportsLoss},
	{"CloseAfterPeerAbort", confCloseAfterPeerAbort},
	{"PausedReader", confPausedReader},
	{"VanishedPeer", confVanishedPeer},
	{"ExitAfterClose", confExitAfterClose},
	{"Limits", confLimits},
	{"ReceiveDeadline", confReceiveDeadline},
	{"PeerClose", confPeerClose},
	{"AcceptForkAfterEOF", confAcceptForkAfterEOF},
	{"APIHygiene", confHygiene},
}

func TestConformance(t *testing.T) {
	for _, st := range confStacks {
		t.Run(st, func(t *testing.T) {
			for _, tc := range confCases {
				t.Run(tc.name, func(t *testing.T) {
					if why, ok := pending[st+"/"+tc.name]; ok && os.Getenv("CONFORMANCE_PENDING") == "" {
						t.Skip(why)
					}
					checkLeaks(t)
					tc.run(t, st)
				})
			}
		})
	}
}

// confPair is pairOn with "race" meaning no required stack.
func confPair(t *testing.T, stack string, ccfg, scfg *carrier.Config) (c, s *carrier.Carrier) {
	t.Helper()
	if stack == "race" {
		stack = ""
	}
	return pairOn(t, stack, ccfg, scfg)
}

func confCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// confBoundaries: messages of every size arrive whole, one per Receive.
func confBoundaries(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	sizes := []int{0, 1, 2, 1199, 1200, 1201, 1400, 16 << 10, 64<<10 + 1, 1 << 20}
	var want [][]byte
	for i := range 50 { // small ones back to back
		want = append(want, []byte(fmt.Sprintf("m%d", i)))
	}
	for _, n := range sizes {
		want = append(want, random(n))
	}
	for _, w := range want {
		if err := c.Send(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range want {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(m.Content, w) || m.Partial || !m.End {
			t.Fatalf("message %d: %d bytes (want %d) partial=%v end=%v", i, len(m.Content), len(w), m.Partial, m.End)
		}
	}
}

// confPartial: Ready with Max returns parts with contiguous offsets, End
// only on the last, and no empty part after it.
func confPartial(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	a, b := random(100_003), []byte("next")
	c.Send(ctx, a)
	c.Send(ctx, b)
	got := readParts(t, ctx, s, 7000)
	if !bytes.Equal(got, a) {
		t.Fatalf("parts: %d bytes, want %d", len(got), len(a))
	}
	m, err := s.Ready(ctx, carrier.ReadyOptions{Max: 7000})
	if err != nil || string(m.Content) != "next" || !m.End || m.Offset != 0 {
		t.Fatalf("after the parts: %v %+v", err, m)
	}
}

// readParts reads one message in parts of at most max bytes, checking the
// part flags.
func readParts(t *testing.T, ctx context.Context, s *carrier.Carrier, max int) []byte {
	t.Helper()
	var got []byte
	for {
		m, err := s.Ready(ctx, carrier.ReadyOptions{Max: max})
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		if len(m.Content) > max || m.Offset != int64(len(got)) {
			t.Fatalf("part of %d bytes at %d after %d bytes", len(m.Content), m.Offset, len(got))
		}
		if len(m.Content) == 0 && !(m.End && len(got) == 0) {
			t.Fatalf("empty part at %d (end=%v)", len(got), m.End)
		}
		got = append(got, m.Content...)
		if m.End {
			return got
		}
		if !m.Partial {
			t.Fatal("a part without End is not marked Partial")
		}
	}
}

// confLarge: a message over the receiver's limit streams through
// NewMessageWriter and Ready; Receive of one fails with
// ErrMessageTooLarge.
func confLarge(t *testing.T, stack string) {
	scfg := serverConfig()
	scfg.MaxMessageSize = 256 << 10
	c, s := confPair(t, stack, nil, scfg)
	ctx := ctxT(t)
	const total = 1 << 20
	want := random(total)
	errc := make(chan error, 1)
	go func() {
		w, err := c.NewMessageWriter(ctx, post.Properties{})
		if err != nil {
			errc <- err
			return
		}
		p := want
		for ; len(p) > 50_000; p = p[50_000:] {
			if _, err := w.Write(p[:50_000]); err != nil {
				errc <- err
				return
			}
		}
		_, err = w.WriteLast(p)
		errc <- err
	}()
	got := readParts(t, ctx, s, 64<<10)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), total)
	}
	// Whole, the same message is over the receiver's limit; it stays
	// pending for Ready, and the next message follows.
	if err := c.Send(ctx, want); err != nil {
		t.Fatal(err)
	}
	c.Send(ctx, []byte("next"))
	for range 2 {
		if _, err := s.Receive(ctx); !errors.Is(err, post.ErrMessageTooLarge) {
			t.Fatalf("Receive over the limit: %v", err)
		}
	}
	if got := readParts(t, ctx, s, 64<<10); !bytes.Equal(got, want) {
		t.Fatalf("after Receive refused it: %d bytes, want %d", len(got), total)
	}
	if m, err := s.Receive(ctx); err != nil || string(m.Content) != "next" {
		t.Fatalf("the next message: %v %v", err, m)
	}
}

// confWriterAbort: an aborted MessageWriter never reaches the reader as
// complete, the reader gets ErrReset for it, Close reports the abort, and
// the next message on the same Carrier arrives.
func confWriterAbort(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	w, err := c.NewMessageWriter(ctx, post.Properties{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(random(100_000)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after Abort returned nil")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Abort returned nil")
	}
	var got int
	for {
		m, err := s.Ready(ctx, carrier.ReadyOptions{Max: 16 << 10})
		if err != nil {
			if err == io.EOF {
				t.Fatal("aborted message: io.EOF, want an error")
			}
			if !errors.Is(err, post.ErrReset) {
				t.Fatalf("aborted message: %v, want ErrReset", err)
			}
			break
		}
		if m.End {
			t.Fatalf("the aborted message arrived complete (%d bytes)", got+len(m.Content))
		}
		got += len(m.Content)
	}
	// Every stack aborts only the message: the Carrier goes on and the
	// next message arrives.
	err = c.Send(ctx, []byte("after"))
	if c.State() == carrier.Closed {
		t.Fatalf("the abort ended the Carrier: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Receive(ctx)
	if err != nil || string(m.Content) != "after" {
		t.Fatalf("after the abort: %v %v", err, m)
	}
}

// confForkBurst: many concurrent forks, each sending 100 messages, all
// arrive complete.
func confForkBurst(t *testing.T, stack string) {
	forks := 1000
	if testing.Short() {
		forks = 200
	}
	const msgs = 100
	c, s := confPair(t, stack, nil, nil)
	ctx := confCtx(t, 120*time.Second)
	actx, stopAccept := context.WithCancel(ctx)
	defer stopAccept()
	var mu sync.Mutex
	counts := map[string]int{}
	var srv sync.WaitGroup
	srv.Add(1)
	go func() {
		defer srv.Done()
		for range forks {
			f, err := s.AcceptFork(actx)
			if err != nil {
				if actx.Err() == nil {
					t.Errorf("accept fork: %v", err)
				}
				return
			}
			srv.Add(1)
			go func() {
				defer srv.Done()
				defer f.Close()
				for {
					m, err := f.Receive(ctx)
					if err == io.EOF {
						return
					}
					if err != nil {
						t.Errorf("fork receive: %v", err)
						return
					}
					id, _, _ := strings.Cut(string(m.Content), "/")
					mu.Lock()
					counts[id]++
					mu.Unlock()
				}
			}()
		}
	}()
	var cli sync.WaitGroup
	for i := range forks {
		cli.Add(1)
		go func() {
			defer cli.Done()
			f, err := c.Fork(ctx)
			if err != nil {
				t.Errorf("fork %d: %v", i, err)
				return
			}
			for j := range msgs {
				if err := f.Send(ctx, []byte(fmt.Sprintf("%d/%d", i, j))); err != nil {
					t.Errorf("fork %d send: %v", i, err)
					break
				}
			}
			if err := f.CloseContext(ctx); err != nil {
				t.Errorf("fork %d close: %v", i, err)
			}
		}()
	}
	cli.Wait()
	if t.Failed() {
		stopAccept() // forks failed: do not wait for them
	}
	srv.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(counts) != forks {
		t.Errorf("%d of %d forks arrived", len(counts), forks)
	}
	for id, n := range counts {
		if n != msgs {
			t.Errorf("fork %s: %d of %d messages", id, n, msgs)
		}
	}
}

// confForkWhileForksWait: Forks that wait for the peer (FSP: a fork of a
// fork waits for fork credit until the peer calls AcceptFork on the fork
// it is made from) do not hold up the Forks of other Carriers of the
// family. A bound of four Fork calls in flight, shared by a Carrier and
// its forks, made the root's Fork wait behind four such Forks until its
// context ended (found by a program written from the docs).
func confForkWhileForksWait(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := confCtx(t, 30*time.Second)
	// The peer takes the root's forks and never a fork's forks.
	accepted := make(chan *carrier.Carrier, 2)
	go func() {
		for range 2 {
			f, err := s.AcceptFork(ctx)
			if err != nil {
				return
			}
			accepted <- f
		}
	}()
	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if err := f.Send(ctx, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	sf := <-accepted
	defer sf.Abort()
	wctx, stopWaiting := context.WithCancel(ctx)
	waiting := make(chan *carrier.Carrier, 4)
	for range 4 {
		go func() {
			g, _ := f.Fork(wctx) // FSP: waits for credit the peer never grants
			waiting <- g
		}()
	}
	defer func() {
		stopWaiting()
		for range 4 {
			if g := <-waiting; g != nil {
				g.Abort()
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // let them start waiting
	g, err := c.Fork(ctx)
	if err != nil {
		t.Fatalf("the root's Fork while four forks of a fork wait: %v", err)
	}
	defer g.Abort()
	if err := g.Send(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	sg := <-accepted
	defer sg.Abort()
	if m, err := sg.Receive(ctx); err != nil || string(m.Content) != "x" {
		t.Fatalf("the root's new fork: %v", err)
	}
}

// confCloseDelivers: Close returns nil once the peer's stack has every
// message, which the peer then reads followed by io.EOF.
func confCloseDelivers(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	for i := range 20 {
		c.Send(ctx, []byte(fmt.Sprint(i)))
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := c.Send(ctx, []byte("x")); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	for i := range 20 {
		m, err := s.Receive(ctx)
		if err != nil || string(m.Content) != fmt.Sprint(i) {
			t.Fatalf("message %d: %v %v", i, err, m)
		}
	}
	if _, err := s.Receive(ctx); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
}

// confCloseLive: closing a fork or a Carrier against a live peer takes
// about a round trip: far less than the linger, which a Close that waited
// for a timer would use up.
func confCloseLive(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	go func() {
		for {
			f, err := s.AcceptFork(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					if _, err := f.Receive(ctx); err != nil {
						f.Close()
						return
					}
				}
			}()
		}
	}()
	const bound = time.Second // the linger is 3 s
	for i := range 20 {
		f, err := c.Fork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f.Send(ctx, []byte("x"))
		start := time.Now()
		if err := f.Close(); err != nil {
			t.Fatalf("fork %d close: %v", i, err)
		}
		if d := time.Since(start); d > bound {
			t.Fatalf("fork %d close took %v against a live peer", i, d)
		}
	}
	c.Send(ctx, []byte("x"))
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > bound {
		t.Fatalf("close took %v against a live peer", d)
	}
}

// confCloseUnread: closing with inbound data unread discards it; Close
// still succeeds and wakes a blocked reader.
func confCloseUnread(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	for range 10 {
		s.Send(ctx, random(1000))
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Receive(ctx); err != nil { // one read, nine not
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		// A blocked reader on the server is woken by the client's close.
		for {
			if _, err := s.Receive(ctx); err != nil {
				done <- err
				return
			}
		}
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("close with unread data: %v", err)
	}
	if err := <-done; err != io.EOF {
		t.Fatalf("peer's reader: %v, want io.EOF", err)
	}
}

// confAbort: Abort ends at once and the peer gets an error wrapping
// ErrReset, not io.EOF.
func confAbort(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := confCtx(t, 10*time.Second)
	blocked := make(chan error, 1)
	go func() {
		_, err := c.Receive(ctx)
		blocked <- err
	}()
	c.Send(ctx, random(100_000))
	if err := c.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; !errors.Is(err, post.ErrClosed) {
		t.Fatalf("local reader after Abort: %v", err)
	}
	if err := c.Send(ctx, []byte("x")); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("send after abort: %v", err)
	}
	for {
		_, err := s.Receive(ctx)
		if err == nil {
			continue // sent before the abort
		}
		if !errors.Is(err, post.ErrReset) {
			t.Fatalf("peer after Abort: %v, want ErrReset", err)
		}
		break
	}
}

// confFlushReportsLoss: Flush returns nil only when every message was
// handed to the stack. Messages queued behind a peer that never reads
// and then aborts, or dropped by this side's Abort, make it fail with
// the reason (until 2 December it returned nil once the queue was empty,
// whether its messages went or were dropped), and so does every later
// Flush, as Close counts every message SendMsg accepted.
func confFlushReportsLoss(t *testing.T, stack string) {
	for _, who := range []string{"peer", "self"} {
		t.Run(who, func(t *testing.T) {
			ccfg := clientConfig()
			ccfg.SendBuffer = 64 << 20
			c, s := confPair(t, stack, ccfg, nil)
			ctx := confCtx(t, 10*time.Second)
			// More than any stack takes for a reader that reads nothing.
			for range 24 {
				if err := c.Send(ctx, make([]byte, 1<<20)); err != nil {
					t.Fatal(err)
				}
			}
			want := post.ErrReset
			stop := s.Abort
			if who == "self" {
				want, stop = post.ErrClosed, c.Abort
			}
			time.AfterFunc(100*time.Millisecond, func() { stop() })
			if err := c.Flush(ctx); !errors.Is(err, want) {
				t.Fatalf("Flush with messages dropped: %v, want %v", err, want)
			}
			if err := c.Flush(ctx); !errors.Is(err, want) {
				t.Fatalf("a later Flush: %v, want %v", err, want)
			}
		})
	}
}

// confBothCloseUnread: both ends send more than the other's windows take
// and close at once without reading. Close discards unread inbound data,
// so neither waits on the other's window until the linger: each Close
// returns nil, or says that its message met the peer's close, never
// ErrTimeout. FSP and TCP waited out the linger on both sides, each
// flushing into the window of a peer that was flushing too.
func confBothCloseUnread(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := confCtx(t, 10*time.Second)
	if err := c.Send(ctx, random(1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, random(1<<20)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Close() }()
	for _, err := range []error{c.Close(), <-errc} {
		if errors.Is(err, post.ErrTimeout) {
			t.Errorf("Close while the peer closes with unread data: %v", err)
		}
	}
}

// confCloseAfterPeerAbort: a Close called just after the peer's Abort
// (its reset possibly still in flight, crossing our close) ends with nil
// or an error wrapping post.ErrReset, never the linger's ErrTimeout. FSP
// dropped a reset that crossed its RELEASE and waited out the linger
// (found by a program written from the docs).
func confCloseAfterPeerAbort(t *testing.T, stack string) {
	for i := range 5 {
		c, s := confPair(t, stack, nil, nil)
		ctx := confCtx(t, 10*time.Second)
		if err := c.Send(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		c.Abort()
		if err := s.Close(); err != nil && (!errors.Is(err, post.ErrReset) || errors.Is(err, post.ErrTimeout)) {
			t.Fatalf("round %d: Close after the peer's Abort: %v, want nil or ErrReset", i, err)
		}
	}
}

// confPausedReader: a reader that pauses lets flow control hold the
// sender; after the pause everything arrives.
func confPausedReader(t *testing.T, stack string) {
	pause := 30 * time.Second
	if testing.Short() {
		pause = 2 * time.Second
	} else if why, ok := pending[stack+"/PausedReader30s"]; ok && os.Getenv("CONFORMANCE_PENDING") == "" {
		t.Skip(why)
	}
	c, s := confPair(t, stack, nil, nil)
	ctx := confCtx(t, pause+60*time.Second)
	const n, size = 200, 64 << 10 // more than any window
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			b := make([]byte, size)
			b[0] = byte(i)
			if err := c.Send(ctx, b); err != nil {
				errc <- err
				return
			}
		}
		errc <- c.Flush(ctx)
	}()
	time.Sleep(pause)
	for i := range n {
		m, err := s.Receive(ctx)
		if err != nil || len(m.Content) != size || m.Content[0] != byte(i) {
			t.Fatalf("message %d after the pause: %v", i, err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// confVanishedPeer: when the peer vanishes, Close returns an error
// within its linger, and the peer's blocked reader fails within its idle
// timeout. The path goes dead in network namespaces (a drop rule), or,
// without them, in a userspace relay, which only UDP stacks can tell
// from a live peer (a TCP relay acknowledges for the vanished one).
func confVanishedPeer(t *testing.T, stack string) {
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Transient.IdleTimeout = 2 * time.Second
	ccfg.Linger = 500 * time.Millisecond
	ccfg.Transient.IdleTimeout = 2 * time.Second
	if stack != "race" {
		scfg.Policy.Stack(stack, policy.Require)
		ccfg.Policy.Stack(stack, policy.Require)
	}
	ctx := confCtx(t, 20*time.Second)
	var l *carrier.Listener
	var remote post.Remote
	var vanish func() error
	if err := netns.Available(); err == nil {
		n := newHolNet(t)
		scfg.Stacks, ccfg.Stacks = nsStacks(n.srv), nsStacks(n.cli)
		if l, err = carrier.Listen(ctx, post.Local{Addr: netip.AddrPortFrom(n.srvAddr, 0)}, scfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		remote = l.Remote(n.srvAddr.String())
		remote.ServerName = "localhost" // the test certificate's name
		vanish = func() error { return n.lossy(100) }
	} else {
		if stack == "tcp" {
			t.Skipf("a vanished TCP peer needs network namespaces: %v", err)
		}
		l = listen(t, scfg)
		udp, tcp, err := netem.NewDualRelay(l.Addr(), l.Addrs()["tcp"], netem.Config{}, netem.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { udp.Close(); tcp.Close() })
		remote = remoteVia(l, map[string]uint16{"fsp": udp.Addr().Port(), "quic": udp.Addr().Port(), "tcp": tcp.Addr().Port()})
		vanish = func() error {
			udp.SetBlackhole(true)
			tcp.SetBlackhole(true)
			return nil
		}
	}
	c, err := carrier.Initiate(ctx, remote, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	c.Send(ctx, []byte("hello"))
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
	if _, err := s.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := vanish(); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, random(10_000)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Close(); err == nil {
		t.Fatal("Close toward a vanished peer returned nil")
	}
	// Contract bounds (linger, idle timeout) plus slack, not speed.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v with a 500 ms linger", d)
	}
	start = time.Now()
	_, err = s.Receive(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("reader of a vanished peer: %v", err)
	}
	checkPrefixOnce(t, err)
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("reader failed after %v with a 2 s idle timeout", d)
	}
}

// nsStacks are the default stacks opening their sockets in ns.
func nsStacks(ns *netns.NS) []psi.Stack {
	var out []psi.Stack
	for _, s := range carrier.DefaultStacks() {
		out = append(out, netns.Stack(s, ns))
	}
	return out
}

// confExitAfterClose: once Close returns nil the sender may go away: the
// receiver gets every byte.
func confExitAfterClose(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	const chunks, size = 8, 1 << 20
	errc := make(chan error, 1)
	go func() {
		for i := range chunks {
			b := make([]byte, size)
			b[0], b[size-1] = byte(i), byte(i)
			if err := c.Send(ctx, b); err != nil {
				errc <- err
				return
			}
		}
		// Close while the tail is still on its way, then "exit".
		errc <- c.CloseContext(ctx)
	}()
	for i := range chunks {
		m, err := s.Receive(ctx)
		if err != nil || len(m.Content) != size || m.Content[0] != byte(i) || m.Content[size-1] != byte(i) {
			t.Fatalf("chunk %d: %v (sender: %v)", i, err, <-errc)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("close: %v", err)
	}
}

// confLimits: the same limits on every stack.
func confLimits(t *testing.T, stack string) {
	ccfg, scfg := clientConfig(), serverConfig()
	ccfg.MaxMessageSize, scfg.MaxMessageSize = 100_000, 50_000
	c, s := confPair(t, stack, ccfg, scfg)
	ctx := ctxT(t)
	if err := c.Send(ctx, make([]byte, 100_001)); !errors.Is(err, post.ErrMessageTooLarge) {
		t.Fatalf("send over the sender's limit: %v", err)
	}
	if err := c.Send(ctx, make([]byte, 50_000)); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Receive(ctx); err != nil || len(m.Content) != 50_000 {
		t.Fatalf("at the limit: %v", err)
	}
	// Over the receiver's limit: parts work.
	c.Send(ctx, make([]byte, 80_000))
	if got := readParts(t, ctx, s, 10_000); len(got) != 80_000 {
		t.Fatalf("parts: %d bytes", len(got))
	}
}

// confReceiveDeadline: a Receive whose context's deadline passes in the
// middle of a message fails with that context's error and keeps what it
// read; the Carrier stays up and the next Receive gets the message whole.
// (TCP maps the deadline onto its socket, which could fail the read before
// the context's timer marked it done: the Carrier took that for a dead
// transient and closed, in most of ten tries.)
func confReceiveDeadline(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	for i := range 10 {
		w, err := c.NewMessageWriter(ctx, post.Properties{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("first part, ")); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err = s.Receive(short)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("try %d: receive past its deadline: %v", i, err)
		}
		if _, err := w.WriteLast([]byte("then the end")); err != nil {
			t.Fatal(err)
		}
		m, err := s.Receive(ctx)
		if err != nil || string(m.Content) != "first part, then the end" {
			t.Fatalf("try %d: after the deadline: %v (state %v)", i, err, s.State())
		}
	}
}

// confPeerClose: after the peer closes, Send fails with ErrPeerClosed and
// no new transient is made.
func confPeerClose(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Receive(ctx); err != io.EOF {
		t.Fatalf("receive after the peer closed: %v, want io.EOF", err)
	}
	if err := c.Send(ctx, []byte("x")); !errors.Is(err, post.ErrPeerClosed) {
		t.Fatalf("send after the peer closed: %v, want ErrPeerClosed", err)
	}
	if c.State() != carrier.Closed {
		t.Fatalf("state %v", c.State())
	}
	// Without reading first: the server's side sees the client close.
	c2, s2 := confPair(t, stack, nil, nil)
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s2.Send(ctx, []byte("x"))
		if errors.Is(err, post.ErrPeerClosed) {
			break
		}
		if err != nil {
			t.Fatalf("send to a closed peer: %v, want ErrPeerClosed", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("Send never reported the peer's close")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// confAcceptForkAfterEOF: a fork the peer made before it closed the root
// is accepted after the root's io.EOF was read, as before it (until 2
// December reading the EOF closed the transient with the fork queued on
// it, and AcceptFork failed while the peer's fork was reset); then
// AcceptFork and Fork fail with errors wrapping post.ErrClosed.
func confAcceptForkAfterEOF(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Send(ctx, []byte("on the fork")); err != nil {
		t.Fatal(err)
	}
	// Close returns nil once the peer's stack has the fork whole.
	if err := f.Close(); err != nil {
		t.Fatalf("closing the fork: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("closing the root: %v", err)
	}
	if _, err := s.Receive(ctx); err != io.EOF {
		t.Fatalf("receive on the root: %v, want io.EOF", err)
	}
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatalf("accepting the fork after the root's EOF: %v", err)
	}
	defer sf.Abort()
	if m, err := sf.Receive(ctx); err != nil || string(m.Content) != "on the fork" {
		t.Fatalf("receive on the fork: %v %v", m, err)
	}
	if _, err := sf.Receive(ctx); err != io.EOF {
		t.Fatalf("receive on the fork after its close: %v, want io.EOF", err)
	}
	if _, err := s.AcceptFork(ctx); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("second AcceptFork: %v, want ErrClosed", err)
	}
	if _, err := s.Fork(ctx); !errors.Is(err, post.ErrClosed) && !errors.Is(err, post.ErrNotSupported) {
		t.Fatalf("Fork after the peer closed: %v, want ErrClosed", err)
	}
}

// confHygiene: bad input is an error, not a panic or a silent success.
func confHygiene(t *testing.T, stack string) {
	c, s := confPair(t, stack, nil, nil)
	ctx := ctxT(t)
	if err := c.SendMsg(ctx, nil); !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("SendMsg(nil): %v", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Send(done, []byte("cancelled")); err == nil {
		t.Fatal("Send with an ended context returned nil")
	}
	if err := c.SendMsg(ctx, &post.Message{Content: []byte("x"), Properties: post.Properties{Antecedents: []post.MessageID{1 << 40}}}); !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("unknown antecedent: %v", err)
	}
	// No message has ID 0 (it asks the Carrier to number the message).
	if err := c.SendMsg(ctx, &post.Message{Content: []byte("x"), Properties: post.Properties{Antecedents: []post.MessageID{0}}}); !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("antecedent 0: %v", err)
	}
	if err := c.SendMsg(ctx, &post.Message{Content: []byte("x"), Properties: post.Properties{Lifetime: -time.Second}}); !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("negative lifetime: %v", err)
	}
	if _, err := c.NewMessageWriter(ctx, post.Properties{Lifetime: -time.Second}); !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("NewMessageWriter with a negative lifetime: %v", err)
	}
	if _, err := s.Ready(ctx, carrier.ReadyOptions{Max: 2, Min: 5}); !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("Ready with Min over Max: %v", err)
	}
	// A class no stack knows (FSP made a Wine clone of it, QUIC and
	// TCP said ErrNotSupported, TCP naming it "wine").
	if f, err := c.ForkClass(ctx, psi.TrafficClass(99)); !errors.Is(err, post.ErrInvalid) {
		if f != nil {
			f.Abort()
		}
		t.Fatalf("ForkClass with an unknown class: %v", err)
	}
	if got := carrier.State(42).String(); got == "" {
		t.Fatal("empty State string")
	}
	c.Send(ctx, []byte("last"))
	if m, err := s.Receive(ctx); err != nil || string(m.Content) != "last" {
		t.Fatalf("after bad input: %v %v (the cancelled send arrived?)", err, m)
	}
	// A stack error reaches the caller with each prefix once.
	s.Abort()
	_, err := c.Receive(ctx)
	if err == nil {
		t.Fatal("receive after the peer aborted returned nil")
	}
	checkPrefixOnce(t, err)
	checkPrefixOnce(t, c.Send(ctx, []byte("x")))
}

// checkPrefixOnce fails if err's text repeats its operation prefix or
// any part twice in a row ("receive quic A->B: receive quic A->B: ...",
// "timeout: timeout").
func checkPrefixOnce(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	parts := strings.Split(err.Error(), ": ")
	if parts[0] != "post" && strings.Count(err.Error(), parts[0]+": ") > 1 {
		t.Errorf("prefix %q repeats: %v", parts[0], err)
	}
	for i := 1; i < len(parts); i++ {
		if parts[i] == parts[i-1] {
			t.Errorf("%q twice in a row: %v", parts[i], err)
		}
	}
}
