package carrier_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netem"
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

// TestZeroRTTChain: Carriers one after another on one Association, each
// sending one idempotent message and closing on the reply, each go as
// 0-RTT over a 20 ms round trip. The reply arrives a round trip before
// the next session ticket; before, QUIC's Close did not wait for it, so
// every other Carrier found only a used ticket and was not even resumed.
func TestZeroRTTChain(t *testing.T) {
	for _, stack := range []string{"quic", "fsp"} {
		t.Run(stack, func(t *testing.T) {
			l := listen(t, serverConfig())
			ctx := ctxT(t)
			go func() {
				for {
					s, err := l.Accept(ctx)
					if err != nil {
						return
					}
					go func() {
						defer s.Close()
						if _, err := s.Receive(ctx); err == nil {
							s.Send(ctx, []byte("ack"))
						}
					}()
				}
			}()
			d := netem.Config{Delay: 10 * time.Millisecond}
			r, err := netem.NewRelay(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.Addrs()[stack].Port()), d, d)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			cfg := clientConfig()
			cfg.Policy.Stack(stack, policy.Require)
			var assoc *association.Association
			for i := range 4 {
				c, err := carrier.Initiate(ctx, post.Remote{Name: r.Addr().String()}, cfg)
				if err != nil {
					t.Fatal(err)
				}
				err = c.SendMsg(ctx, &post.Message{Content: []byte("get"), Properties: post.Properties{Idempotent: true}})
				if err == nil {
					_, err = c.Receive(ctx)
				}
				if err != nil {
					t.Fatalf("carrier %d: %v", i, err)
				}
				used, _ := c.Used0RTT(ctx)
				c.Close()
				if i > 0 && !used {
					t.Fatalf("carrier %d of one Association did not go as 0-RTT", i)
				}
				if assoc == nil {
					assoc = c.Association()
					lazy := *cfg
					lazy.Association, lazy.Lazy = assoc, true
					cfg = &lazy
				}
			}
		})
	}
}
