package carrier_test

import (
	"net/netip"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// TestPathLocalAddress: both ends bound to the unspecified address report
// the address they use (127.0.0.1 here) as the path's local end, the
// initiator from the moment Initiate returns. FSP's and QUIC's initiators
// said 0.0.0.0 (cmd/postsockets worked around it for its own output).
func TestPathLocalAddress(t *testing.T) { forStacks(t, testPathLocalAddress) }

func testPathLocalAddress(t *testing.T, stack string) {
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Policy.Stack(stack, policy.Require)
	ccfg.Policy.Stack(stack, policy.Require)
	ctx := ctxT(t)
	l, err := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("0.0.0.0:0")}, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	remote := l.Remote("127.0.0.1")
	remote.ServerName = "localhost"
	c, err := carrier.Initiate(ctx, remote, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	loop := netip.MustParseAddr("127.0.0.1")
	if p := c.Stats().Path; p.Local.Addr() != loop || p.Local.Port() == 0 {
		t.Errorf("initiator's path %v, want the local end on %v", p, loop)
	}
	if err := c.Send(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if p := s.Stats().Path; p.Local.Addr() != loop || p.Local.Port() != l.Addr().Port() && stack != "tcp" {
		t.Errorf("listener's path %v, want the local end on %v", p, loop)
	}
}
