package fsp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/postsockets/postsockets/internal/netns"
)

// TestNetnsRouteChange runs a transfer between two namespaces joined by
// two veth links (two subnets). The server listens on an address both
// links route to; the client's route through link 1 is preferred. Halfway
// through, link 1 loses its address and goes down: the client's packets
// leave through link 2 from its other address, the server validates that
// address and the transfer completes intact.
func TestNetnsRouteChange(t *testing.T) {
	netns.Require(t)
	cns, sns := netns.New(t, "fspc"), netns.New(t, "fsps")
	c1, s1 := netip.MustParsePrefix("10.71.1.2/24"), netip.MustParsePrefix("10.71.1.1/24")
	c2, s2 := netip.MustParsePrefix("10.71.2.2/24"), netip.MustParsePrefix("10.71.2.1/24")
	l1 := netns.Link(t, cns, sns, c1, s1)
	netns.Link(t, cns, sns, c2, s2)
	server := netip.MustParseAddrPort("10.71.9.1:4433")
	if err := sns.AddAddr("lo", netip.PrefixFrom(server.Addr(), 32)); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]string{
		{"ip", "route", "add", "10.71.9.1/32", "via", s1.Addr().String(), "metric", "10"},
		{"ip", "route", "add", "10.71.9.1/32", "via", s2.Addr().String(), "metric", "20"},
	} {
		if err := cns.Run(r...); err != nil {
			t.Fatal(err)
		}
	}

	scfg, ccfg := pair(t)
	spc, err := sns.ListenUDP(server)
	if err != nil {
		t.Fatal(err)
	}
	cpc, err := cns.ListenUDP(netip.MustParseAddrPort("0.0.0.0:0"))
	if err != nil {
		t.Fatal(err)
	}
	st, ct := &Transport{Conn: spc}, &Transport{Conn: cpc}
	t.Cleanup(func() { ct.Close(); st.Close(); cpc.Close(); spc.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := ct.Dial(ctx, net.UDPAddrFromAddrPort(server), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	first := addrPort(s.RemoteAddr())
	if first.Addr() != c1.Addr() {
		t.Fatalf("the client came from %v, not link 1", first)
	}
	transferMid(t, s, c, 16<<20, func() {
		if err := cns.DelAddr(l1.AName, c1); err != nil {
			t.Error(err)
		}
		if err := cns.SetLinkUp(l1.AName, false); err != nil {
			t.Error(err)
		}
	})
	// And the other way, over the new path.
	transferMid(t, c, s, 4<<20, func() {})
	now := addrPort(s.RemoteAddr())
	if now.Addr() != c2.Addr() {
		t.Fatalf("the server sends to %v, not the client's link 2 address", now)
	}
	t.Logf("moved %v -> %v; paths %+v", first, now, s.Paths())
}
