package carrier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/quic"
)

// TestPolicyProhibitsFork: with fork prohibited, Fork and AcceptFork fail
// with ErrPolicyConflict on every stack.
func TestPolicyProhibitsFork(t *testing.T) { forStacks(t, testPolicyProhibitsFork) }

func testPolicyProhibitsFork(t *testing.T, stack string) {
	ccfg, scfg := clientConfig(), serverConfig()
	ccfg.Policy.Feature(psi.Fork, policy.Prohibit)
	scfg.Policy.Feature(psi.Fork, policy.Prohibit)
	c, s := pairOn(t, stack, ccfg, scfg)
	ctx := ctxT(t)
	if f, err := c.Fork(ctx); !errors.Is(err, post.ErrPolicyConflict) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("Fork: %v, want ErrPolicyConflict", err)
	}
	if _, err := s.AcceptFork(ctx); !errors.Is(err, post.ErrPolicyConflict) {
		t.Fatalf("AcceptFork: %v, want ErrPolicyConflict", err)
	}
}

// TestPolicyProhibitsDatagrams: with datagrams prohibited, an unreliable
// message with a lifetime goes on the QUIC stream, not as a datagram.
func TestPolicyProhibitsDatagrams(t *testing.T) {
	for _, prohibit := range []bool{false, true} {
		ccfg := clientConfig()
		ccfg.Policy.AllowMilk = true
		if prohibit {
			ccfg.Policy.Feature(psi.Datagrams, policy.Prohibit)
		}
		c, s := pairOn(t, "quic", ccfg, nil)
		ctx := ctxT(t)
		m := &post.Message{Content: []byte("maybe"), Properties: post.Properties{Unreliable: true, Lifetime: 10 * time.Second}}
		if err := c.SendMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Receive(ctx); err != nil || string(got.Content) != "maybe" {
			t.Fatalf("receive: %v %v", err, got)
		}
		st := c.Transient().(interface{ Stats() quic.Stats }).Stats()
		switch {
		case prohibit && st.DatagramsSent != 0:
			t.Fatalf("%d datagrams sent although the policy prohibits them", st.DatagramsSent)
		case !prohibit && st.DatagramsSent == 0:
			t.Log("no datagram sent even when allowed; the prohibition check proves little")
		}
	}
}

// TestPolicyPeerProhibitsFork: when only the listener prohibits forks, a
// client's fork fails loudly on every stack: Fork or its Send returns an
// error, or the peer's refusal ends its Receive at once.
func TestPolicyPeerProhibitsFork(t *testing.T) { forStacks(t, testPolicyPeerProhibitsFork) }

func testPolicyPeerProhibitsFork(t *testing.T, stack string) {
	ccfg, scfg := clientConfig(), serverConfig()
	scfg.Policy.Feature(psi.Fork, policy.Prohibit)
	c, _ := pairOn(t, stack, ccfg, scfg)
	ctx := ctxT(t)
	f, err := c.Fork(ctx)
	if err != nil {
		refused(t, err)
		return
	}
	defer f.Close()
	if err := f.Send(ctx, []byte("on a prohibited fork")); err != nil {
		refused(t, err)
		return
	}
	// The peer refuses the fork: its Receive fails at once, not by
	// waiting out a deadline for a reply that never comes.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = f.Receive(rctx)
	switch {
	case err == nil:
		t.Fatal("the fork got a reply")
	case rctx.Err() != nil:
		t.Fatalf("the fork was not refused, only left unanswered: %v", err)
	}
	refused(t, err)
}

// refused checks that a fork the peer refused failed with an error
// wrapping post.ErrRefused, the same on every stack (FSP said ErrReset
// until 1 December).
func refused(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, post.ErrRefused) {
		t.Errorf("refused fork: %v; want an error wrapping post.ErrRefused", err)
	}
}
