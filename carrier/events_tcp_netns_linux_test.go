package carrier_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// TestEventBlockedPathTCPNetns: a TCP client whose link goes down
// mid-transfer reports the kernel's retransmission timeouts as one
// SoftError.
func TestEventBlockedPathTCPNetns(t *testing.T) {
	netns.Require(t)
	cns, sns := netns.New(t, "etc"), netns.New(t, "ets")
	ca, sa := netip.MustParsePrefix("10.73.1.2/24"), netip.MustParsePrefix("10.73.1.1/24")
	link := netns.Link(t, cns, sns, ca, sa)
	var clog eventLog
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Stacks, ccfg.Stacks = nsStacks(sns), nsStacks(cns)
	scfg.Policy.Stack("tcp", policy.Require)
	ccfg.Policy.Stack("tcp", policy.Require)
	ccfg.OnEvent = clog.add
	ctx := ctxT(t)
	l, err := carrier.Listen(ctx, post.Local{Addr: netip.AddrPortFrom(sa.Addr(), 0)}, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r := l.Remote(sa.Addr().String())
	r.ServerName = "localhost"
	c, err := carrier.Initiate(ctx, r, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Abort() })
	if err := c.Send(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Abort() })
	if _, err := s.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cns.SetLinkUp(link.AName, false); err != nil {
		t.Fatal(err)
	}
	go c.Send(ctx, random(1<<20)) // retransmitted into the void
	deadline := time.Now().Add(10 * time.Second)
	for len(clog.of(carrier.SoftError)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	se := clog.of(carrier.SoftError)
	if len(se) != 1 || se[0].Stack != "tcp" || se[0].Old.Remote.Addr() != sa.Addr() {
		t.Fatalf("SoftError events %+v, want one on tcp to %v", se, sa.Addr())
	}
	t.Logf("SoftError: %v", se[0].Err)
}
