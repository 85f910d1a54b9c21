package carrier_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// TestEventPathChangeNetns moves an FSP client to its second address
// mid-transfer (link 1 loses its address and goes down, so packets leave
// through link 2) and expects one PathChange on each side: on the server
// to the client's new address, on the client from its old local address
// to the new one.
func TestEventPathChangeNetns(t *testing.T) {
	netns.Require(t)
	cns, sns := netns.New(t, "evc"), netns.New(t, "evs")
	c1, s1 := netip.MustParsePrefix("10.72.1.2/24"), netip.MustParsePrefix("10.72.1.1/24")
	c2, s2 := netip.MustParsePrefix("10.72.2.2/24"), netip.MustParsePrefix("10.72.2.1/24")
	l1 := netns.Link(t, cns, sns, c1, s1)
	netns.Link(t, cns, sns, c2, s2)
	server := netip.MustParseAddrPort("10.72.9.1:4433")
	if err := sns.AddAddr("lo", netip.PrefixFrom(server.Addr(), 32)); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]string{
		{"ip", "route", "add", "10.72.9.1/32", "via", s1.Addr().String(), "metric", "10"},
		{"ip", "route", "add", "10.72.9.1/32", "via", s2.Addr().String(), "metric", "20"},
	} {
		if err := cns.Run(r...); err != nil {
			t.Fatal(err)
		}
	}
	spc, err := sns.ListenUDP(server)
	if err != nil {
		t.Fatal(err)
	}
	cpc, err := cns.ListenUDP(netip.MustParseAddrPort("0.0.0.0:0"))
	if err != nil {
		t.Fatal(err)
	}
	st, ct := &fsp.Transport{Conn: spc}, &fsp.Transport{Conn: cpc}
	t.Cleanup(func() { ct.Close(); st.Close(); cpc.Close(); spc.Close() })

	var slog, clog eventLog
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Stacks, ccfg.Stacks = []psi.Stack{&fsp.Stack{Transport: st}}, []psi.Stack{&fsp.Stack{Transport: ct}}
	scfg.OnEvent, ccfg.OnEvent = slog.add, clog.add
	l, err := carrier.Listen(ctxT(t), post.Local{Addr: server}, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx := ctxT(t)
	c, err := carrier.Initiate(ctx, post.Remote{Name: server.String(), ServerName: "localhost"}, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	msg := random(8 << 20)
	sent := make(chan error, 1)
	go func() { sent <- c.Send(ctx, msg) }()
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if first := s.Path().Remote; first.Addr() != c1.Addr() {
		t.Fatalf("the client came from %v, not link 1", first)
	}
	// Mid-transfer: link 1 goes away.
	part, err := s.Ready(ctx, carrier.ReadyOptions{Max: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	got := append([]byte(nil), part.Content...)
	if err := cns.DelAddr(l1.AName, c1); err != nil {
		t.Fatal(err)
	}
	if err := cns.SetLinkUp(l1.AName, false); err != nil {
		t.Fatal(err)
	}
	for !part.End {
		if part, err = s.Ready(ctx, carrier.ReadyOptions{Max: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		got = append(got, part.Content...)
	}
	if !bytes.Equal(got, msg) || <-sent != nil {
		t.Fatal("the transfer did not survive the move")
	}
	// Each side sees one PathChange to the new path: the server a new
	// remote address, the client (told by the local address the
	// server's packets now come to) a new local one.
	deadline := time.Now().Add(5 * time.Second)
	for (len(slog.of(carrier.PathChange)) == 0 || len(clog.of(carrier.PathChange)) == 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a second event would be a bug: give it time to show
	pcs := slog.of(carrier.PathChange)
	if len(pcs) != 1 || pcs[0].New.Remote.Addr() != c2.Addr() || pcs[0].Old.Remote.Addr() != c1.Addr() {
		t.Fatalf("server PathChange events %+v, want one from %v to %v", pcs, c1.Addr(), c2.Addr())
	}
	ccs := clog.of(carrier.PathChange)
	if len(ccs) != 1 || ccs[0].New.Local.Addr() != c2.Addr() || ccs[0].Old.Local.Addr() != c1.Addr() ||
		ccs[0].New.Remote != server || ccs[0].Old.Remote != server {
		t.Fatalf("client PathChange events %+v, want one from local %v to %v, to %v", ccs, c1.Addr(), c2.Addr(), server)
	}
	if p := c.Path(); p.Local.Addr() != c2.Addr() || p.Remote != server {
		t.Fatalf("client path after the move %v", p)
	}
	t.Logf("server: %v -> %v; client: %v -> %v", pcs[0].Old.Remote, pcs[0].New.Remote, ccs[0].Old.Local, ccs[0].New.Local)
}
