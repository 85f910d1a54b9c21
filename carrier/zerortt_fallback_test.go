package carrier_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// TestZeroRTTFailedStackRacesAgain: the Association holds a ticket for
// one UDP stack, and the listener restarts without that stack (or
// without UDP at all, the port refusing or silently dropping datagrams).
// A lazy Carrier's idempotent first message starts a 0-RTT attempt on the
// ticket's stack, which wins the race at once and then fails its
// handshake. The Carrier races the other stacks, its first message
// arrives once, the message after it next, and the next race starts with
// another stack. Until 2 December the Carrier ended with the 0-RTT
// attempt's error and the first message never arrived.
func TestZeroRTTFailedStackRacesAgain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ticket    string   // the stack holding the ticket
		prohibit  []string // stacks the restarted listener lacks
		blackhole bool     // a socket swallows the UDP port's datagrams
	}{
		{"fsp/quic-only", "fsp", []string{"fsp", "tcp"}, false},
		{"fsp/tcp-only-refused", "fsp", []string{"fsp", "quic"}, false},
		{"fsp/udp-dropped", "fsp", []string{"fsp", "quic"}, true},
		{"quic/fsp-only", "quic", []string{"quic", "tcp"}, false},
		{"quic/tcp-only-refused", "quic", []string{"fsp", "quic"}, false},
		{"quic/udp-dropped", "quic", []string{"fsp", "quic"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testZeroRTTFallback(t, tc.ticket, tc.prohibit, tc.blackhole)
		})
	}
}

func testZeroRTTFallback(t *testing.T, stack string, prohibit []string, blackhole bool) {
	ctx := ctxT(t)
	cache := tls.NewLRUClientSessionCache(8)
	l := listen(t, serverConfig())
	remote := l.Remote("127.0.0.1")
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.Addr().Port())

	// A ticket for stack, in the cache the next Association shares.
	first := clientConfig()
	first.Security.SessionCache = cache
	first.Policy.Stack(stack, policy.Require)
	c0, s0 := exchangeOn(t, l, remote, first)
	c0.Close()
	s0.Close()
	l.Close()

	scfg := serverConfig()
	for _, s := range prohibit {
		scfg.Policy.Stack(s, policy.Prohibit)
	}
	var l2 *carrier.Listener
	var err error
	for range 200 { // the port frees once the old connections are gone
		if l2, err = carrier.Listen(ctx, post.Local{Addr: addr}, scfg); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Close() })
	if blackhole {
		pc, err := netem.Drop(addr, 3*time.Second) // the port frees once the old connections are gone
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
	}

	c := sendFirstLazy(t, remote, cache, stack)
	if err := c.Send(ctx, []byte("second")); err != nil {
		t.Fatal(err)
	}
	s, err := l2.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v (client: state %v)", err, c.State())
	}
	defer s.Close()
	for _, want := range []string{"first", "second"} {
		m, err := s.Receive(ctx)
		if err != nil || string(m.Content) != want {
			t.Fatalf("want %q, got %v, %v", want, m, err)
		}
	}
	if err := s.Send(ctx, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Receive(ctx); err != nil || string(m.Content) != "reply" {
		t.Fatalf("reply: %v, %v", m, err)
	}
	if got := c.Stack(); got == stack {
		t.Fatalf("the Carrier runs on %s, which the listener lacks", got)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	// Nothing more came: the first message was not delivered twice.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if m, err := s.Receive(short); err == nil {
		t.Fatalf("a further message: %q", m.Content)
	}
	cands, err := c.Association().Candidates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cands[0].Stack.Name() == stack {
		t.Errorf("the next race starts with %s, which failed", stack)
	}
	t.Logf("%s failed; the Carrier runs on %s", stack, c.Stack())
}

// exchangeOn makes a Carrier to l with cfg and a round trip on it, which
// leaves cfg's session cache a ticket.
func exchangeOn(t *testing.T, l *carrier.Listener, remote post.Remote, cfg *carrier.Config) (client, server *carrier.Carrier) {
	t.Helper()
	ctx := ctxT(t)
	c, err := carrier.Initiate(ctx, remote, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, []byte("ack")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	return c, s
}

// sendFirstLazy makes a lazy Carrier to remote, preferring stack, with
// the tickets in cache, and has it send an idempotent first message.
func sendFirstLazy(t *testing.T, remote post.Remote, cache tls.ClientSessionCache, stack string) *carrier.Carrier {
	t.Helper()
	cfg := clientConfig()
	cfg.Security.SessionCache = cache
	cfg.Policy.Stack(stack, policy.Prefer)
	cfg.Lazy = true
	// A failing attempt waits out its handshake timeout.
	cfg.Transient.HandshakeTimeout = 3 * time.Second
	c, err := carrier.Initiate(ctxT(t), remote, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	idem := post.Properties{Idempotent: true}
	if err := c.SendMsg(ctxT(t), &post.Message{Content: []byte("first"), Properties: idem}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestZeroRTTFailedEverywhere: the listener is gone. The 0-RTT attempt
// fails, and so does the race after it: Flush reports the first message
// lost, with the refusal, and nothing hangs. The Carrier stays dormant,
// so a later Send races again.
func TestZeroRTTFailedEverywhere(t *testing.T) {
	ctx := ctxT(t)
	cache := tls.NewLRUClientSessionCache(8)
	l := listen(t, serverConfig())
	remote := l.Remote("127.0.0.1")
	first := clientConfig()
	first.Security.SessionCache = cache
	first.Policy.Stack("fsp", policy.Require)
	c0, s0 := exchangeOn(t, l, remote, first)
	c0.Close()
	s0.Close()
	l.Close()

	c := sendFirstLazy(t, remote, cache, "fsp")
	err := c.Flush(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("flush: %v (ctx %v)", err, ctx.Err())
	}
	if !errors.Is(err, post.ErrRefused) && !errors.Is(err, post.ErrTimeout) {
		t.Errorf("flush: %v, wrapping neither ErrRefused nor ErrTimeout", err)
	}
	if st := c.State(); st != carrier.Dormant {
		t.Errorf("state %v after the race failed", st)
	}
}
