package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
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
// a TCP relay.
func TestConformanceDarkPath(t *testing.T) {
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
		return conformancePair(t, tune, true)
	}, psitest.Only("DarkPath"))
}

// conformancePair makes a pair on loopback, through a TCP relay if relay.
func conformancePair(t *testing.T, tune func(*psi.Config), relay bool) psitest.Pair {
	certs := testcert.Must()
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
	var through func(testing.TB, netip.AddrPort) *psitest.Relay
	if relay {
		through = psitest.TCPRelay
	}
	p := psitest.Connect(t, ctx, ln, func(addr netip.AddrPort) (psi.Transient, error) { return s.Dial(ctx, addr, ccfg) }, through)
	// A process exit closes the socket.
	p.ExitA = func() { p.A.(*transient).cork.Conn.Close() }
	return p
}

// TestConformanceVanish runs the cases that need a peer to vanish, in a
// network namespace whose firewall then drops every TCP packet.
func TestConformanceVanish(t *testing.T) {
	netns.Require(t)
	certs := testcert.Must()
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		ns := netns.New(t, "tcpvanish")
		scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
		ccfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool}}
		tune(scfg)
		tune(ccfg)
		var s Stack
		var a, b psi.Transient
		err := ns.Do(func() error {
			ln, err := s.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
			if err != nil {
				return err
			}
			t.Cleanup(func() { ln.Close() })
			if a, err = s.Dial(ctx, ln.Addr(), ccfg); err != nil {
				return err
			}
			t.Cleanup(func() { a.Close() })
			if b, err = ln.Accept(ctx); err != nil {
				return err
			}
			t.Cleanup(func() { b.Close() })
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return psitest.Pair{
			A: a, B: b,
			VanishB: func() {
				if err := ns.Drop(100, "meta l4proto tcp"); err != nil {
					t.Fatal(err)
				}
			},
		}
	}, psitest.Only("VanishedPeer", "CloseContextBounded"))
}

// TestForkDisabled checks that a policy prohibiting forks switches them
// off on both sides.
func TestForkDisabled(t *testing.T) {
	certs := testcert.Must()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s Stack
	for _, side := range []string{"client", "server"} {
		scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
		ccfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool}}
		want := post.ErrPolicyConflict
		if side == "client" {
			ccfg.Disabled = psi.Fork
		} else {
			scfg.Disabled = psi.Fork
			want = post.ErrRefused
		}
		ln, err := s.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		a, err := s.Dial(ctx, ln.Addr(), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if _, err := a.Fork(ctx, psi.Wine); !errors.Is(err, want) {
			t.Errorf("%s disabled forks: Fork returned %v, want %v", side, err, want)
		}
	}
}
