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

// TestEventBlockedPathQUIC: a QUIC client whose path is blocked reports
// quic-go's repeated probe timeouts as a SoftError, then the end of its
// transient (idle timeout) as a ConnectionError, then Closed.
func TestEventBlockedPathQUIC(t *testing.T) {
	mc := newMovingPC(t)
	var clog eventLog
	scfg, ccfg := serverConfig(), clientConfig()
	ccfg.OnEvent = clog.add
	ccfg.Transient.IdleTimeout = 2 * time.Second
	ccfg.Stacks = []psi.Stack{&quic.Stack{PacketConn: func(netip.AddrPort) (net.PacketConn, error) { return mc, nil }}}
	c, s := pairOn(t, "quic", ccfg, scfg)
	ctx := ctxT(t)
	if err := s.Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	mc.blocked.Store(true)
	c.Send(ctx, random(100000)) // in flight when the path is blocked
	deadline := time.Now().Add(15 * time.Second)
	for len(clog.of(carrier.ClosedEvent)) == 0 && time.Now().Before(deadline) {
		if _, err := c.Receive(ctx); err != nil {
			break
		}
	}
	for len(clog.of(carrier.ClosedEvent)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(clog.of(carrier.SoftError)) == 0 || len(clog.of(carrier.ConnectionError)) != 1 || len(clog.of(carrier.ClosedEvent)) != 1 {
		t.Fatalf("want a SoftError, one ConnectionError and Closed: %+v", clog.evs)
	}
	t.Logf("SoftError: %v; ConnectionError: %v", clog.of(carrier.SoftError)[0].Err, clog.of(carrier.ConnectionError)[0].Err)
}
