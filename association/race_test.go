package association_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/internal/leakcheck"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// fakeStack dials by calling dial; it records attempts.
type fakeStack struct {
	name     string
	network  string
	dial     func(ctx context.Context, remote netip.AddrPort) error
	attempts atomic.Int32
	mu       sync.Mutex
	started  []time.Time
	made     []*fakeTransient
}

func (s *fakeStack) Name() string           { return s.name }
func (s *fakeStack) Network() string        { return s.network }
func (s *fakeStack) Features() psi.Features { return psi.Reliable }
func (s *fakeStack) Dial(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (psi.Transient, error) {
	s.attempts.Add(1)
	s.mu.Lock()
	s.started = append(s.started, time.Now())
	s.mu.Unlock()
	if err := s.dial(ctx, remote); err != nil {
		return nil, err
	}
	tr := &fakeTransient{stack: s.name, remote: remote}
	s.mu.Lock()
	s.made = append(s.made, tr)
	s.mu.Unlock()
	return tr, nil
}
func (s *fakeStack) Listen(context.Context, netip.AddrPort, *psi.Config) (psi.Listener, error) {
	return nil, post.ErrNotSupported
}

type fakeTransient struct {
	psi.Transient
	stack  string
	remote netip.AddrPort
	closed atomic.Bool
}

func (t *fakeTransient) Stack() string         { return t.stack }
func (t *fakeTransient) Path() post.Path       { return post.Path{Remote: t.remote} }
func (t *fakeTransient) Close() error          { t.closed.Store(true); return nil }
func (t *fakeTransient) Association() [16]byte { return [16]byte{} }

func hang(ctx context.Context, _ netip.AddrPort) error { <-ctx.Done(); return ctx.Err() }
func refuse(context.Context, netip.AddrPort) error     { return post.ErrRefused }
func ok(context.Context, netip.AddrPort) error         { return nil }

var v4 = netip.MustParseAddrPort("127.0.0.1:9")

func newAssoc(t *testing.T, pol policy.Context, stacks ...psi.Stack) *association.Association {
	t.Helper()
	a, err := association.New(association.Config{Remote: post.RemoteAddr(v4), Stacks: stacks, Policy: pol, FailureTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRaceFirstWins(t *testing.T) {
	fsp := &fakeStack{name: "fsp", network: "udp", dial: ok}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: ok}
	a := newAssoc(t, policy.Context{}, fsp, tcp)
	tr, err := a.Establish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tr.Stack() != "fsp" {
		t.Fatalf("winner %s, want fsp", tr.Stack())
	}
	if tcp.attempts.Load() != 0 {
		t.Fatal("tcp attempted although fsp won at once")
	}
}

func TestRaceFallbackAfterDelay(t *testing.T) {
	fsp := &fakeStack{name: "fsp", network: "udp", dial: hang}
	quic := &fakeStack{name: "quic", network: "udp", dial: hang}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: ok}
	a := newAssoc(t, policy.Context{AttemptDelay: 20 * time.Millisecond}, fsp, quic, tcp)
	begin := time.Now()
	tr, err := a.Establish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tr.Stack() != "tcp" {
		t.Fatalf("winner %s, want tcp", tr.Stack())
	}
	// UDP and TCP stacks interleave, so TCP is the second attempt.
	if n := quic.attempts.Load(); n != 0 {
		t.Fatalf("quic attempted %d times before tcp", n)
	}
	// From the race's start: fsp's own clock starts when its goroutine
	// runs, which a loaded host may delay (tcp 11 ms after fsp, 2 of 100).
	if d := tcp.started[0].Sub(begin); d < 20*time.Millisecond {
		t.Fatalf("tcp started %v after the race, before the attempt delay", d)
	}
	w, _ := a.Winner()
	if w.Stack != "tcp" || w.Attempts != 2 {
		t.Fatalf("winner %+v", w)
	}
}

func TestRaceFailureStartsNextAtOnce(t *testing.T) {
	fsp := &fakeStack{name: "fsp", network: "udp", dial: refuse}
	quic := &fakeStack{name: "quic", network: "udp", dial: ok}
	a := newAssoc(t, policy.Context{AttemptDelay: time.Hour}, fsp, quic)
	tr, err := a.Establish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tr.Stack() != "quic" {
		t.Fatalf("winner %s", tr.Stack())
	}
}

func TestRaceAllFail(t *testing.T) {
	fsp := &fakeStack{name: "fsp", network: "udp", dial: refuse}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: refuse}
	a := newAssoc(t, policy.Context{}, fsp, tcp)
	_, err := a.Establish(context.Background())
	if !errors.Is(err, post.ErrRefused) {
		t.Fatalf("got %v, want ErrRefused", err)
	}
	var op *post.OpError
	if !errors.As(err, &op) || op.Op != "initiate" {
		t.Fatalf("got %T %v", err, err)
	}
}

// socketDeadline fails as a dial does whose context's deadline, set on
// its socket, fired before the context's own timer marked it done.
func socketDeadline(context.Context, netip.AddrPort) error {
	return fmt.Errorf("%w: %w", post.ErrTimeout, os.ErrDeadlineExceeded)
}

// TestRaceCallerDeadlineNoFailure: an attempt that fails once the
// caller's deadline has passed is not held against its candidate, and the
// race's error wraps context.DeadlineExceeded, even before the context's
// timer marks it done. The race took ctx.Err() alone for that: the
// candidate was tried last for FailureTTL, and the error wrapped no
// context error (so a Carrier reported a message whose lifetime ran out
// while reviving as failed, not expired).
func TestRaceCallerDeadlineNoFailure(t *testing.T) {
	fsp := &fakeStack{name: "fsp", network: "udp", dial: socketDeadline}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: ok}
	a := newAssoc(t, policy.Context{AttemptDelay: time.Hour}, fsp, tcp)
	ctx, cancel := ctxend.Late(time.Hour)
	defer cancel()
	if tr, err := a.Establish(ctx); err != nil || tr.Stack() != "tcp" {
		t.Fatalf("race: %v, %v; want tcp", tr, err)
	}
	if cands, err := a.Candidates(context.Background()); err != nil || cands[0].Stack.Name() != "fsp" {
		t.Fatalf("candidates after the caller's deadline failed fsp: %v, %v; want fsp first", cands, err)
	}

	only := newAssoc(t, policy.Context{}, &fakeStack{name: "fsp", network: "udp", dial: socketDeadline})
	_, err := only.Establish(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("race past the caller's deadline: %v, want DeadlineExceeded and ErrTimeout", err)
	}
}

func TestRaceProhibitedNeverAttempted(t *testing.T) {
	fsp := &fakeStack{name: "fsp", network: "udp", dial: ok}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: ok}
	pol := new(policy.Context).Stack("fsp", policy.Prohibit)
	a := newAssoc(t, *pol, fsp, tcp)
	for range 3 {
		if _, err := a.Establish(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if fsp.attempts.Load() != 0 {
		t.Fatal("prohibited stack attempted")
	}
}

func TestRaceCachesWinnerAndRecovers(t *testing.T) {
	var fspUp atomic.Bool
	fsp := &fakeStack{name: "fsp", network: "udp", dial: func(ctx context.Context, r netip.AddrPort) error {
		if fspUp.Load() {
			return nil
		}
		return hang(ctx, r)
	}}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: ok}
	a, err := association.New(association.Config{Remote: post.RemoteAddr(v4), Stacks: []psi.Stack{fsp, tcp},
		Policy: policy.Context{AttemptDelay: 10 * time.Millisecond}, FailureTTL: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if tr, _ := a.Establish(context.Background()); tr.Stack() != "tcp" {
		t.Fatalf("first winner %s", tr.Stack())
	}
	before := fsp.attempts.Load()
	// Straight to the cached winner.
	if tr, _ := a.Establish(context.Background()); tr.Stack() != "tcp" {
		t.Fatalf("second winner %s", tr.Stack())
	}
	if fsp.attempts.Load() != before {
		t.Fatal("cached winner did not go first")
	}
	// FSP recovers; once its failure ages out, FSP wins again.
	fspUp.Store(true)
	time.Sleep(60 * time.Millisecond)
	var got string
	for range 3 {
		tr, err := a.Establish(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got = tr.Stack()
	}
	if got != "fsp" {
		t.Fatalf("after recovery winner %s, want fsp", got)
	}
}

func TestRaceLosersClosedNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	// Events, not sleeps, order the attempts: tcp completes once quic has
	// started, and quic completes once it has lost (the race cancels it).
	quicStarted := make(chan struct{})
	slow := &fakeStack{name: "quic", network: "udp"}
	slow.dial = func(ctx context.Context, r netip.AddrPort) error {
		close(quicStarted)
		<-ctx.Done()
		return nil // completes after losing; must be closed by the race
	}
	fsp := &fakeStack{name: "fsp", network: "udp", dial: hang}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: func(ctx context.Context, r netip.AddrPort) error {
		<-quicStarted
		return nil
	}}
	a := newAssoc(t, policy.Context{AttemptDelay: 10 * time.Millisecond}, fsp, tcp, slow)
	tr, err := a.Establish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tr.Stack() != "tcp" {
		t.Fatalf("winner %s", tr.Stack())
	}
	// The QUIC attempt completed after TCP won: it is closed in the
	// background.
	if err := a.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	slow.mu.Lock()
	late := slow.made
	slow.mu.Unlock()
	if len(late) != 1 || !late[0].closed.Load() {
		t.Fatalf("late winners %d, closed %v", len(late), len(late) == 1 && late[0].closed.Load())
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Fatalf("%d goroutines left behind", n-base)
	}
}

// TestRaceReturnsWinnerAtOnce: the winner is returned while a loser that
// ignores cancellation is still dialling (RFC 8305); the loser is closed
// in the background once it completes, and Wait waits for that.
func TestRaceReturnsWinnerAtOnce(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	stuck := &fakeStack{name: "fsp", network: "udp", dial: func(context.Context, netip.AddrPort) error {
		<-release // a handshake that does not notice cancellation
		return nil
	}}
	tcp := &fakeStack{name: "tcp", network: "tcp", dial: ok}
	a := newAssoc(t, policy.Context{AttemptDelay: 10 * time.Millisecond}, stuck, tcp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, err := a.Establish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Stack() != "tcp" {
		t.Fatalf("winner %s", tr.Stack())
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if err := a.Wait(short); err == nil {
		t.Fatal("Wait returned while a loser was still dialling")
	}
	close(release)
	if err := a.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	stuck.mu.Lock()
	late := stuck.made
	stuck.mu.Unlock()
	if len(late) != 1 || !late[0].closed.Load() {
		t.Fatal("the late winner was not closed")
	}
	// The loser was slower than the winner: the next race starts with tcp.
	if cands, err := a.Candidates(ctx); err != nil || cands[0].Stack.Name() != "tcp" {
		t.Fatalf("next race's candidates %v, %v; want tcp first", cands, err)
	}
	// tcp wins it even if a loaded host holds tcp's dial past the attempt
	// delay, when fsp starts too: fsp now hangs (nothing dials it).
	stuck.dial = hang
	if tr, err := a.Establish(ctx); err != nil || tr.Stack() != "tcp" {
		t.Fatalf("second race: %v, %v", tr, err)
	}
	if err := a.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestResolveUnknownHost(t *testing.T) {
	a, err := association.New(association.Config{Remote: post.RemoteName("no-such-host.invalid:443"),
		Stacks: []psi.Stack{&fakeStack{name: "tcp", network: "tcp", dial: ok}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Establish(context.Background()); !errors.Is(err, post.ErrUnknownHost) {
		t.Fatalf("got %v, want ErrUnknownHost", err)
	}
}

// TestResolveErrors: a Remote name that is not "host:port" fails with
// ErrInvalid (it said ErrUnknownHost, as if a resolver had looked the
// name up), and a resolver's failure of any kind wraps ErrUnknownHost.
func TestResolveErrors(t *testing.T) {
	stacks := []psi.Stack{&fakeStack{name: "tcp", network: "tcp", dial: ok}}
	for _, name := range []string{"127.0.0.1", "example.com", "example.com:http", "example.com:70000", ":"} {
		a, err := association.New(association.Config{Remote: post.RemoteName(name), Stacks: stacks})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Establish(context.Background()); !errors.Is(err, post.ErrInvalid) {
			t.Errorf("%q: got %v, want ErrInvalid", name, err)
		}
	}
	a, err := association.New(association.Config{Remote: post.RemoteName("example.com:443"), Stacks: stacks,
		Resolver: failingResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Establish(context.Background()); !errors.Is(err, post.ErrUnknownHost) {
		t.Errorf("resolver failure: got %v, want ErrUnknownHost", err)
	}
}

type failingResolver struct{}

func (failingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "server misbehaving", Name: "example.com"}
}

func TestInterleaveFamilies(t *testing.T) {
	in := []netip.AddrPort{
		netip.MustParseAddrPort("1.1.1.1:1"), netip.MustParseAddrPort("2.2.2.2:1"),
		netip.MustParseAddrPort("[::1]:1"), netip.MustParseAddrPort("[::2]:1"), netip.MustParseAddrPort("[::3]:1"),
	}
	got := association.InterleaveFamilies(in)
	want := []string{"[::1]:1", "1.1.1.1:1", "[::2]:1", "2.2.2.2:1", "[::3]:1"}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("got %v", got)
		}
	}
}

func TestGatherLocals(t *testing.T) {
	all, err := association.GatherLocals(&policy.Context{})
	if err != nil {
		t.Fatal(err)
	}
	var lo string
	for _, l := range all {
		if l.Addr.IsLoopback() {
			lo = l.Interface
		}
	}
	if lo == "" {
		t.Skip("no loopback interface with an address")
	}
	pol := new(policy.Context).Interface(lo, policy.Prohibit)
	some, err := association.GatherLocals(pol)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range some {
		if l.Interface == lo {
			t.Fatalf("prohibited interface %s gathered", lo)
		}
	}
	// Requiring the loopback interface binds attempts to its address.
	fsp := &fakeStack{name: "fsp", network: "udp", dial: ok}
	a := newAssoc(t, *new(policy.Context).Interface(lo, policy.Require), fsp)
	cands, err := a.Candidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) == 0 || !cands[0].Local.Addr().IsLoopback() {
		t.Fatalf("candidates %v", cands)
	}
}
