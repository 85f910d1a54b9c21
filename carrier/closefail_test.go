package carrier_test

import (
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/policy"
)

// TestCloseAfterTransientFailed: messages handed to the stack after the
// peer vanished are never delivered; once the transient has timed out,
// Close must say so rather than return nil.
func TestCloseAfterTransientFailed(t *testing.T) {
	for _, stack := range []string{"fsp", "quic"} {
		t.Run(stack, func(t *testing.T) {
			t.Parallel()
			scfg, ccfg := serverConfig(), clientConfig()
			scfg.Policy.Stack(stack, policy.Require)
			ccfg.Policy.Stack(stack, policy.Require)
			ccfg.Transient.IdleTimeout = time.Second
			ctx := ctxT(t)
			l := listen(t, scfg)
			udp, err := netem.NewRelay(l.Addr(), netem.Config{}, netem.Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { udp.Close() })
			c, err := carrier.Initiate(ctx, remoteVia(l, map[string]uint16{stack: udp.Addr().Port()}), ccfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Abort()
			if err := c.Send(ctx, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			s, err := l.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Abort()
			if _, err := s.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			udp.SetBlackhole(true)
			if err := c.Send(ctx, []byte("never delivered")); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Receive(ctx); err == nil {
				t.Fatal("Receive from a vanished peer returned a message")
			}
			if err := c.Close(); err == nil {
				t.Fatal("Close returned nil although a message accepted after the peer vanished was never delivered")
			}
		})
	}
}
