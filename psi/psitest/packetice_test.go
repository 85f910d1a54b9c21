package psitest_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/psitest"
	"github.com/postsockets/postsockets/psi/quic"
)

// packetStack dials and listens over a net.PacketConn it is given, as a
// peer-to-peer Association runs a stack over the ICE-selected pair.
type packetStack interface {
	psi.PacketDialer
	psi.PacketListener
}

// TestPacketStacksOverICE runs the contract's suite over each datagram
// stack on an ICE path between two loopback agents, through
// psi.PacketDialer and psi.PacketListener.
func TestPacketStacksOverICE(t *testing.T) {
	certs := testcert.Must()
	for _, st := range []packetStack{&fsp.Stack{}, &quic.Stack{}} {
		t.Run(st.(psi.Stack).Name(), func(t *testing.T) {
			if _, ok := st.(*fsp.Stack); ok && testing.Short() {
				t.Skip("short: TestFSPOverICE covers FSP on an ICE path")
			}
			psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t.Cleanup(cancel)
				ca, cb := icePair(t, ctx)
				va, vb := psitest.NewVanishingConn(ca), psitest.NewVanishingConn(cb)
				scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
				ccfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool, ServerName: "localhost"}}
				tune(scfg)
				tune(ccfg)
				l, err := st.ListenPacket(ctx, vb, scfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				a, err := st.DialPacket(ctx, va, ca.RemoteAddr(), ccfg)
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
					ExitA:   func() { va.Vanish(); ca.Close() },
					VanishB: vb.Vanish,
				}
			})
		})
	}
}
