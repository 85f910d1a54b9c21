package carrier_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/quic"
)

// TestEventPathChangeQUIC: a QUIC client that rebinds mid-connection
// gives the server a PathChange to its new address once quic-go follows
// it (the Carrier notices as messages arrive).
func TestEventPathChangeQUIC(t *testing.T) {
	mc := newMovingPC(t)
	var slog eventLog
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.OnEvent = slog.add
	scfg.Policy.Stack("quic", policy.Require)
	ccfg.Policy.Stack("quic", policy.Require)
	ccfg.Stacks = []psi.Stack{&quic.Stack{PacketConn: func(netip.AddrPort) (net.PacketConn, error) { return mc, nil }}}
	c, s := pairOn(t, "quic", ccfg, scfg)
	ctx := ctxT(t)
	mc.move(t)
	newAddr := mc.cur.Load().LocalAddr().(*net.UDPAddr).AddrPort()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; len(slog.of(carrier.PathChange)) == 0 && time.Now().Before(deadline); i++ {
		msg := random(20000)
		if err := c.Send(ctx, msg); err != nil {
			t.Fatal(err)
		}
		m, err := s.Receive(ctx)
		if err != nil || !bytes.Equal(m.Content, msg) {
			t.Fatalf("round %d: %v", i, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pcs := slog.of(carrier.PathChange)
	if len(pcs) != 1 || pcs[0].New.Remote.Port() != newAddr.Port() {
		t.Fatalf("server PathChange events %+v, want one to port %d (server path now %v)", pcs, newAddr.Port(), s.Path())
	}
}
