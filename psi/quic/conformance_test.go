package quic

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/psitest"
)

// TestConformance runs the delivery and close contract's suite.
func TestConformance(t *testing.T) {
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
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
		a, err := cst.Dial(ctx, l.Addr(), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		b, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return psitest.Pair{
			A: a, B: b,
			// A process exit closes the socket without a word.
			ExitA:   func() { cconn.Vanish(); cconn.PacketConn.Close() },
			VanishB: sconn.Vanish,
		}
	})
}

var _ = context.Background
