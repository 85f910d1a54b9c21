package carrier_test

import (
	"crypto/tls"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// resumedOn reports whether c's transient resumed a session.
func resumedOn(t *testing.T, c *carrier.Carrier) bool {
	t.Helper()
	r, ok := c.Transient().(interface{ Resumed() bool })
	if !ok {
		t.Fatalf("%T does not report resumption", c.Transient())
	}
	return r.Resumed()
}

// ticketed returns a client configuration requiring stack whose
// Association holds a ticket from l: one Carrier made a round trip and
// closed.
func ticketed(t *testing.T, l *carrier.Listener, stack string) *carrier.Config {
	t.Helper()
	cfg := clientConfig()
	cfg.Policy.Stack(stack, policy.Require)
	c, s := exchangeOn(t, l, l.Remote("localhost"), cfg)
	if resumedOn(t, c) {
		t.Fatal("the first Carrier reports a resumed session")
	}
	c.Close()
	s.Close()
	lazy := *cfg
	lazy.Association, lazy.Lazy = c.Association(), true
	return &lazy
}

// exchange has a Carrier made with cfg send an idempotent message to l,
// which must arrive once, and read the reply.
func exchange(t *testing.T, l *carrier.Listener, cfg *carrier.Config) (client, server *carrier.Carrier) {
	t.Helper()
	ctx := ctxT(t)
	c, err := carrier.Initiate(ctx, post.Remote{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SendMsg(ctx, &post.Message{Content: []byte("again"), Properties: post.Properties{Idempotent: true}}); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if m, err := s.Receive(ctx); err != nil || string(m.Content) != "again" {
		t.Fatalf("got %v, %v", m, err)
	}
	if err := s.Send(ctx, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Receive(ctx); err != nil || string(m.Content) != "reply" {
		t.Fatalf("reply: %v, %v", m, err)
	}
	return c, s
}

// TestResumeAfterListenerRestart: the listener restarts on the same
// address, with the same key or another (same CA): its ticket keys are
// new, so the ticket the Association holds is no good there. On every
// stack the next Carrier falls back to a full handshake without an
// error, its idempotent first message arrives once, and neither end
// reports 0-RTT. A Carrier after it resumes with the new listener's
// ticket.
func TestResumeAfterListenerRestart(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		t.Run("same-key", func(t *testing.T) { testResumeAfterRestart(t, stack, false) })
		t.Run("new-key", func(t *testing.T) { testResumeAfterRestart(t, stack, true) })
	})
}

func testResumeAfterRestart(t *testing.T, stack string, newKey bool) {
	l := listen(t, serverConfig())
	cfg := ticketed(t, l, stack)
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.Addr().Port())
	l.Close()

	leaf := certs.Leaf
	if newKey {
		var err error
		if leaf, err = certs.Issue("localhost"); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	var l2 *carrier.Listener
	for range 100 { // the port frees once the old connections are gone
		l2, err = carrier.Listen(ctxT(t), post.Local{Addr: addr},
			&carrier.Config{Security: psi.Security{Certificates: []tls.Certificate{leaf}}})
		if err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Close() })

	c, s := exchange(t, l2, cfg)
	ctx := ctxT(t)
	for who, x := range map[string]*carrier.Carrier{"initiator": c, "listener": s} {
		if used, err := x.Used0RTT(ctx); err != nil || used {
			t.Errorf("%s: 0-RTT %v (%v) with a ticket the listener cannot open", who, used, err)
		}
	}
	if resumedOn(t, c) {
		t.Error("resumed with the old listener's ticket")
	}
	c.Close()
	c2, _ := exchange(t, l2, cfg)
	if !resumedOn(t, c2) {
		t.Error("the Carrier after the fallback did not resume with the new listener's ticket")
	}
}

// TestResumeConcurrentDials: four Carriers on one Association dial the
// listener at once, the Association holding one ticket. Every first
// message arrives once, and every dial resumes on every stack: QUIC and
// TCP because crypto/tls reuses a TLS 1.3 ticket, FSP because a ticket
// an earlier dial took still resumes, without 0-RTT. (Until 2 December an
// FSP ticket was single use, and three of the four made a full
// handshake.)
func TestResumeConcurrentDials(t *testing.T) { forStacks(t, testResumeConcurrent) }

func testResumeConcurrent(t *testing.T, stack string) {
	l := listen(t, serverConfig())
	cfg := ticketed(t, l, stack)
	ctx := ctxT(t)
	const n = 4
	type result struct {
		resumed, early bool
		err            error
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			c, err := carrier.Initiate(ctx, post.Remote{}, cfg)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			if err := c.SendMsg(ctx, &post.Message{Content: []byte{byte(i)}, Properties: post.Properties{Idempotent: true}}); err != nil {
				results <- result{err: err}
				return
			}
			if _, err := c.Receive(ctx); err != nil {
				results <- result{err: err}
				return
			}
			used, err := c.Used0RTT(ctx)
			r, _ := c.Transient().(interface{ Resumed() bool })
			results <- result{resumed: r != nil && r.Resumed(), early: used, err: err}
		}()
	}
	got := make(map[byte]int)
	for range n {
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		m, err := s.Receive(ctx)
		if err != nil || len(m.Content) != 1 {
			t.Fatalf("got %v, %v", m, err)
		}
		got[m.Content[0]]++
		if err := s.Send(ctx, []byte("reply")); err != nil {
			t.Fatal(err)
		}
	}
	resumed, early := 0, 0
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.resumed {
			resumed++
		}
		if r.early {
			early++
		}
	}
	if len(got) != n {
		t.Fatalf("messages received: %v", got)
	}
	if resumed != n {
		t.Errorf("%d of %d concurrent dials resumed", resumed, n)
	}
	t.Logf("%s: %d of %d concurrent dials resumed, %d as 0-RTT", stack, resumed, n, early)
}
