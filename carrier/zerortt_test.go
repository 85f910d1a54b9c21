package carrier_test

import (
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// TestZeroRTTIdempotentFirstMessage: a second, lazy Carrier on the same
// Association sends its idempotent first message as 0-RTT data, on QUIC
// and on FSP.
func TestZeroRTTIdempotentFirstMessage(t *testing.T) {
	for _, stack := range []string{"quic", "fsp"} {
		t.Run(stack, func(t *testing.T) { testZeroRTTFirstMessage(t, stack, true) })
		t.Run(stack+"/not-idempotent", func(t *testing.T) { testZeroRTTFirstMessage(t, stack, false) })
	}
}

func testZeroRTTFirstMessage(t *testing.T, stack string, idem bool) {
	scfg := serverConfig()
	l := listen(t, scfg)
	ctx := ctxT(t)
	cfg := clientConfig()
	cfg.Policy.Stack(stack, policy.Require)
	c1, err := carrier.Initiate(ctx, l.Remote("localhost"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A round trip makes sure the session ticket has arrived.
	c1.Send(ctx, []byte("one"))
	s1, _ := l.Accept(ctx)
	s1.Receive(ctx)
	s1.Send(ctx, []byte("ack"))
	if _, err := c1.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	s1.Close()

	cfg2 := *cfg
	cfg2.Association = c1.Association()
	cfg2.Lazy = true
	c2, err := carrier.Initiate(ctx, post.Remote{}, &cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.State() != carrier.Dormant {
		t.Fatalf("lazy carrier is %v", c2.State())
	}
	if err := c2.SendMsg(ctx, &post.Message{Content: []byte("idempotent"), Properties: post.Properties{Idempotent: idem}}); err != nil {
		t.Fatal(err)
	}
	s2, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m, err := s2.Receive(ctx)
	if err != nil || string(m.Content) != "idempotent" {
		t.Fatalf("%v %v", err, m)
	}
	if m.Early != idem {
		t.Fatalf("the first message says Early %v; idempotent %v", m.Early, idem)
	}
	for who, c := range map[string]*carrier.Carrier{"initiator": c2, "listener": s2} {
		used, err := c.Used0RTT(ctx)
		if err != nil || used != idem {
			t.Fatalf("%s: idempotent %v, 0-RTT %v (%v)", who, idem, used, err)
		}
	}
}
