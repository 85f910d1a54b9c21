package carrier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// TestForkSides checks what docs/design.md says of who can fork: on FSP
// and QUIC either end, also once the Listener is closed (a fork is a
// clone or stream of the connection); on TCP, where a fork is a new
// connection to the listener, only the initiating side, and only while
// the Listener is open (ErrNotSupported and ErrRefused otherwise).
func TestForkSides(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		scfg, ccfg := serverConfig(), clientConfig()
		scfg.Policy.Stack(stack, policy.Require)
		ccfg.Policy.Stack(stack, policy.Require)
		l := listen(t, scfg)
		ctx := ctxT(t)
		c, err := carrier.Initiate(ctx, l.Remote("localhost"), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Send(ctx, []byte("root")); err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		// The accepting side forks.
		err = forkAndDeliver(ctx, s, c)
		if stack == "tcp" {
			if !errors.Is(err, post.ErrNotSupported) {
				t.Errorf("accepted side's fork over TCP: %v; want ErrNotSupported", err)
			}
		} else if err != nil {
			t.Errorf("accepted side's fork: %v", err)
		}

		// The initiating side forks once the Listener is closed.
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		err = forkAndDeliver(ctx, c, s)
		if stack == "tcp" {
			if !errors.Is(err, post.ErrRefused) {
				t.Errorf("fork over TCP after the Listener closed: %v; want ErrRefused", err)
			}
		} else if err != nil {
			t.Errorf("fork after the Listener closed: %v", err)
		}
	})
}

// forkAndDeliver forks from, sends a message on the fork and receives it
// on the fork to accepts.
func forkAndDeliver(ctx context.Context, from, to *carrier.Carrier) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f, err := from.Fork(ctx)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Send(ctx, []byte("on a fork")); err != nil {
		return err
	}
	g, err := to.AcceptFork(ctx)
	if err != nil {
		return err
	}
	defer g.Close()
	m, err := g.Receive(ctx)
	if err != nil {
		return err
	}
	if string(m.Content) != "on a fork" {
		return errors.New("wrong content: " + string(m.Content))
	}
	return nil
}
