package tcp

import (
	"context"
	"crypto/tls"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/psitest"
)

// TestConformance runs the delivery and close contract's suite.
func TestConformance(t *testing.T) {
	certs := testcert.Must()
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
		ccfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool}}
		tune(scfg)
		tune(ccfg)
		// Room for the fork burst's concurrent handshakes.
		s := Stack{Backlog: 1024, MaxHandshakes: 1024, MaxHandshakesPerSource: 256}
		ln, err := s.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		a, err := s.Dial(ctx, ln.Addr(), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		b, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return psitest.Pair{
			A: a, B: b,
			// A process exit closes the socket.
			ExitA: func() { a.(*transient).cork.Conn.Close() },
		}
	})
}
