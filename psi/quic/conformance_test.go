package quic

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/psitest"
)

// TestConformance runs the delivery and close contract's suite.
func TestConformance(t *testing.T) {
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
		return conformancePair(t, tune, false)
	})
}

// TestConformanceDarkPath runs the case of a middlebox going dark, over
// a UDP relay.
func TestConformanceDarkPath(t *testing.T) {
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
		return conformancePair(t, tune, true)
	}, psitest.Only("DarkPath"))
}

// conformancePair makes a pair on loopback, through a UDP relay if relay.
func conformancePair(t *testing.T, tune func(*psi.Config), relay bool) psitest.Pair {
	ctx := testContext(t)
	scfg, ccfg := serverConfig(), clientConfig()
	tune(scfg)
	tune(ccfg)
	var sconn, cconn *psitest.VanishingConn
	wrap := func(dst **psitest.VanishingConn) func(netip.AddrPort) (net.PacketConn, error) {
		return func(local netip.AddrPort) (net.PacketConn, error) {
			pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
			if err != nil {
				return nil, err
			}
			*dst = psitest.NewVanishingConn(pc)
			return *dst, nil
		}
	}
	sst := &Stack{PacketConn: wrap(&sconn)}
	cst := &Stack{PacketConn: wrap(&cconn)}
	l, err := sst.Listen(ctx, loopback, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var through func(testing.TB, netip.AddrPort) *psitest.Relay
	if relay {
		through = psitest.UDPRelay
	}
	p := psitest.Connect(t, ctx, l, func(addr netip.AddrPort) (psi.Transient, error) { return cst.Dial(ctx, addr, ccfg) }, through)
	// A process exit closes the socket without a word.
	p.ExitA = func() { cconn.Vanish(); cconn.PacketConn.Close() }
	p.VanishB = sconn.Vanish
	return p
}

// TestConformanceLossy runs the cases about delivery and close over an
// emulated path with a 10 ms round trip and 2% loss each way, so that
// retransmissions are in play when Close waits for the peer.
func TestConformanceLossy(t *testing.T) {
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
		ctx := testContext(t)
		scfg, ccfg := serverConfig(), clientConfig()
		tune(scfg)
		tune(ccfg)
		st, _ := netemStack(netem.Config{Delay: 5 * time.Millisecond, Loss: 0.02})
		l, err := st.Listen(ctx, loopback, scfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		a, err := st.Dial(ctx, l.Addr(), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		b, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return psitest.Pair{A: a, B: b}
	}, psitest.Only("Boundaries", "NoEmptyEndPart", "CloseReadAll",
		"CloseUnreadByPeer", "ConcurrentClose", "PeerCloseEndsSends", "Abort", "AbortMessage", "ExitAfterClose"))
}
