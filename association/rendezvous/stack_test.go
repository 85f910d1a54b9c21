package rendezvous

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/quic"
)

// stackByName returns a fresh stack that runs over a session's path.
func stackByName(name string) psi.Stack {
	if name == "quic" {
		return &quic.Stack{}
	}
	return &fsp.Stack{}
}

// connectStacks runs Connect for alice and bob at once, offering the
// given stacks.
func connectStacks(t testing.TB, ctx context.Context, url string, stacksA, stacksB []string) (sa, sb *Session, errA, errB error) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sb, errB = Connect(ctx, ConnectConfig{Key: testKey("bob"), Peer: id("alice"), RendezvousURL: url, ICE: loopbackICE(), Stacks: stacksB})
	}()
	sa, errA = Connect(ctx, ConnectConfig{Key: testKey("alice"), Peer: id("bob"), RendezvousURL: url, ICE: loopbackICE(), Stacks: stacksA})
	wg.Wait()
	return sa, sb, errA, errB
}

// establishBoth runs Establish on both sessions with the stack they
// agreed on.
func establishBoth(ctx context.Context, sa, sb *Session) (ta, tb psi.Transient, errA, errB error) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tb, errB = sb.Establish(ctx, stackByName(sb.Stack), nil)
	}()
	ta, errA = sa.Establish(ctx, stackByName(sa.Stack), nil)
	wg.Wait()
	return ta, tb, errA, errB
}

// stackPair rendezvouses alice and bob on loopback and runs stack over
// the path.
func stackPair(t testing.TB, ctx context.Context, url, stack string) (psi.Transient, psi.Transient) {
	t.Helper()
	sa, sb, errA, errB := connectStacks(t, ctx, url, []string{stack}, []string{stack})
	if errA != nil || errB != nil {
		if sa != nil {
			sa.Close()
		}
		if sb != nil {
			sb.Close()
		}
		t.Fatalf("connect: alice %v, bob %v", errA, errB)
	}
	if sa.Stack != stack || sb.Stack != stack {
		t.Fatalf("agreed on %s and %s, want %s", sa.Stack, sb.Stack, stack)
	}
	ta, tb, errA, errB := establishBoth(ctx, sa, sb)
	if errA != nil || errB != nil {
		for _, tr := range []psi.Transient{ta, tb} {
			if tr != nil {
				tr.Close()
			}
		}
		t.Fatalf("establish: alice %v, bob %v", errA, errB)
	}
	return ta, tb
}

func send(ctx context.Context, t psi.Transient, p []byte) error {
	return t.WriteMessage(ctx, p, true, nil)
}

func receive(ctx context.Context, t psi.Transient) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, end, err := t.ReadMessage(ctx, buf)
		out = append(out, buf[:n]...)
		if err != nil || end {
			return out, err
		}
	}
}

// TestStackOverICE runs each datagram stack over the path through
// Establish, as a peer-to-peer Association does: messages both ways, a
// large one, each side sees the other's key, and closing releases the
// path.
func TestStackOverICE(t *testing.T) {
	for _, stack := range []string{"fsp", "quic"} {
		t.Run(stack, func(t *testing.T) {
			checkGoroutines(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			url := newServer(t, NewServer(Config{MaxWait: time.Second}))
			ta, tb := stackPair(t, ctx, url, stack)
			if ta.Stack() != stack || tb.Stack() != stack {
				t.Fatalf("transients on %s and %s", ta.Stack(), tb.Stack())
			}
			for _, c := range []struct {
				tr   psi.Transient
				want string
			}{{ta, "bob"}, {tb, "alice"}} {
				pid, ok := psi.PeerIdentityOf(c.tr)
				if !ok || !pid.Verified || IDFromPin(pid.Pin) != id(c.want) {
					t.Fatalf("peer %s (verified %v), want %s", IDFromPin(pid.Pin), pid.Verified, c.want)
				}
			}
			for i := range 5 {
				msg := fmt.Appendf(nil, "message %d from alice", i)
				if err := send(ctx, ta, msg); err != nil {
					t.Fatal(err)
				}
				got, err := receive(ctx, tb)
				if err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("bob got %q, %v", got, err)
				}
				if err := send(ctx, tb, bytes.ToUpper(msg)); err != nil {
					t.Fatal(err)
				}
				got, err = receive(ctx, ta)
				if err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
					t.Fatalf("alice got %q, %v", got, err)
				}
			}
			size := 4 << 20
			if testing.Short() {
				size = 256 << 10
			}
			big := make([]byte, size)
			rand.Read(big)
			errc := make(chan error, 1)
			go func() { errc <- send(ctx, ta, big) }()
			got, err := receive(ctx, tb)
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("bob got %d bytes, %v", len(got), err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			errc = make(chan error, 1)
			go func() { errc <- tb.Close() }()
			if err := ta.Close(); err != nil {
				t.Errorf("alice close: %v", err)
			}
			if err := <-errc; err != nil {
				t.Errorf("bob close: %v", err)
			}
		})
	}
}

// TestAgreeStack: both sides pick the controlling side's first choice
// that the other offered; an offer without stacks stands for FSP.
func TestAgreeStack(t *testing.T) {
	fq, qf := []string{"fsp", "quic"}, []string{"quic", "fsp"}
	for _, c := range []struct {
		ctrl, other []string
		want        string
	}{
		{fq, qf, "fsp"},
		{qf, fq, "quic"},
		{fq, []string{"quic"}, "quic"},
		{[]string{"quic"}, fq, "quic"},
		{nil, qf, "fsp"},
		{[]string{"quic"}, nil, ""},
		{[]string{"tcp"}, fq, ""},
	} {
		got, err := AgreeStack(true, c.ctrl, c.other)
		got2, err2 := AgreeStack(false, c.other, c.ctrl)
		if got != c.want || got2 != c.want {
			t.Errorf("controlling %v, other %v: %q and %q, want %q", c.ctrl, c.other, got, got2, c.want)
		}
		if c.want == "" && (!errors.Is(err, post.ErrNoCandidates) || !errors.Is(err2, post.ErrNoCandidates)) {
			t.Errorf("controlling %v, other %v: errors %v, %v", c.ctrl, c.other, err, err2)
		}
	}
	bad := offer("abcd")
	bad.Stacks = []string{"FSP over IP"}
	if err := bad.Validate(); !errors.Is(err, post.ErrMalformed) {
		t.Errorf("bad stack name: %v", err)
	}
	bad.Stacks = make([]string, MaxStacks+1)
	for i := range bad.Stacks {
		bad.Stacks[i] = "fsp"
	}
	if err := bad.Validate(); !errors.Is(err, post.ErrMalformed) {
		t.Errorf("too many stacks: %v", err)
	}
}

// TestNoCommonStack: peers offering no stack in common both fail after
// the exchange, before ICE.
func TestNoCommonStack(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := newServer(t, NewServer(Config{MaxWait: time.Second}))
	sa, sb, errA, errB := connectStacks(t, ctx, url, []string{"fsp"}, []string{"quic"})
	for _, s := range []*Session{sa, sb} {
		if s != nil {
			s.Close()
		}
	}
	if !errors.Is(errA, post.ErrNoCandidates) || !errors.Is(errB, post.ErrNoCandidates) {
		t.Fatalf("alice %v, bob %v", errA, errB)
	}
}

func benchmarkOverICE(b *testing.B, stack string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ta, tb := stackPair(b, ctx, newServerB(b), stack)
	defer ta.Close()
	defer tb.Close()
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if err := send(ctx, ta, msg); err != nil {
				return
			}
		}
	}()
	for range b.N {
		if _, err := receive(ctx, tb); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFSPOverICE(b *testing.B)  { benchmarkOverICE(b, "fsp") }
func BenchmarkQUICOverICE(b *testing.B) { benchmarkOverICE(b, "quic") }

// BenchmarkFSPOverUDP is the baseline for BenchmarkFSPOverICE: the same
// transfer over a plain loopback UDP socket.
func BenchmarkFSPOverUDP(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := fsp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), &fsp.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var (
		wg   sync.WaitGroup
		cb   *fsp.Conn
		errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, errB = l.Accept(ctx)
	}()
	ca, err := fsp.Dial(ctx, l.Addr().(*net.UDPAddr).AddrPort(), &fsp.Config{})
	wg.Wait()
	if err != nil || errB != nil {
		b.Fatal(err, errB)
	}
	defer ca.Close()
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	go func() {
		for range b.N {
			if err := ca.SendMessage(ctx, msg); err != nil {
				return
			}
		}
	}()
	for range b.N {
		if _, err := cb.ReceiveMessage(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEstablishWrongStack: a stack other than the one both sides agreed
// on is refused, and the session is closed.
func TestEstablishWrongStack(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := newServer(t, NewServer(Config{MaxWait: time.Second}))
	sa, sb, errA, errB := connectStacks(t, ctx, url, []string{"fsp", "quic"}, []string{"quic", "fsp"})
	if errA != nil || errB != nil {
		t.Fatalf("connect: alice %v, bob %v", errA, errB)
	}
	defer sb.Close()
	other := "fsp"
	if sa.Stack == "fsp" {
		other = "quic"
	}
	if _, err := sa.Establish(ctx, stackByName(other), nil); !errors.Is(err, post.ErrPolicyConflict) {
		t.Fatalf("alice agreed on %s, established %s: %v", sa.Stack, other, err)
	}
	if _, err := sa.Conn.WriteTo([]byte("x"), sa.PeerAddr); err == nil {
		t.Fatal("session still open")
	}
}
