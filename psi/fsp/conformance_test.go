package fsp

import (
	"net"
	"net/netip"
	"testing"

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
	s, c := pair(t)
	scfg, ccfg := &psi.Config{Security: s.Security}, &psi.Config{Security: c.Security}
	tune(scfg)
	tune(ccfg)
	conn := func() *psitest.VanishingConn {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		// As Listen and Dial size the sockets they own.
		pc.SetReadBuffer(socketBuffer)
		pc.SetWriteBuffer(socketBuffer)
		return psitest.NewVanishingConn(pc)
	}
	sconn, cconn := conn(), conn()
	st, ct := &Transport{Conn: sconn}, &Transport{Conn: cconn}
	t.Cleanup(func() { ct.Close(); st.Close(); cconn.Close(); sconn.Close() })
	l, err := (&Stack{Transport: st}).Listen(ctx, loopback, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var through func(testing.TB, netip.AddrPort) *psitest.Relay
	if relay {
		through = psitest.UDPRelay
	}
	p := psitest.Connect(t, ctx, l, func(addr netip.AddrPort) (psi.Transient, error) {
		return (&Stack{Transport: ct}).Dial(ctx, addr, ccfg)
	}, through)
	// A process exit closes the socket without a word.
	p.ExitA = func() { cconn.Vanish(); ct.Close(); cconn.Close() }
	p.VanishB = sconn.Vanish
	return p
}
