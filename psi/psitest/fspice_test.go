package psitest_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/ice"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/psitest"
)

// TestFSPOverICE runs the contract's suite over FSP on an ICE path
// between two loopback agents, as a peer-to-peer Association uses it.
func TestFSPOverICE(t *testing.T) {
	certs := testcert.Must()
	psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		ca, cb := icePair(t, ctx)
		va, vb := psitest.NewVanishingConn(ca), psitest.NewVanishingConn(cb)
		ta, tb := &fsp.Transport{Conn: va}, &fsp.Transport{Conn: vb}
		t.Cleanup(func() { ta.Close(); tb.Close() })
		scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
		ccfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool, ServerName: "localhost"}}
		tune(scfg)
		tune(ccfg)
		l, err := (&fsp.Stack{Transport: tb}).Listen(ctx, netip.AddrPort{}, scfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		remote := ca.RemoteAddr().(*net.UDPAddr).AddrPort()
		a, err := (&fsp.Stack{Transport: ta}).Dial(ctx, remote, ccfg)
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
			ExitA:   func() { va.Vanish(); ta.Close(); ca.Close() },
			VanishB: vb.Vanish,
		}
	})
}

// icePair connects two loopback ICE agents and returns their paths.
func icePair(t *testing.T, ctx context.Context) (a, b *ice.PacketConn) {
	t.Helper()
	cfg := ice.Config{
		NetworkTypes:    []string{ice.UDP4},
		IncludeLoopback: true,
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() },
	}
	type peer struct {
		agent      *ice.Agent
		cands      []string
		ufrag, pwd string
	}
	newPeer := func() peer {
		ag, err := ice.NewAgent(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ag.Close() })
		cands, err := ag.Gather(ctx)
		if err != nil {
			t.Fatal(err)
		}
		u, p, err := ag.LocalCredentials()
		if err != nil {
			t.Fatal(err)
		}
		return peer{ag, cands, u, p}
	}
	pa, pb := newPeer(), newPeer()
	if err := pa.agent.AddRemote(pb.ufrag, pb.pwd, pb.cands); err != nil {
		t.Fatal(err)
	}
	if err := pb.agent.AddRemote(pa.ufrag, pa.pwd, pa.cands); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var errB error
	wg.Add(1)
	go func() {
		defer wg.Done()
		b, errB = pb.agent.Connect(ctx, false)
	}()
	a, errA := pa.agent.Connect(ctx, true)
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("ICE: %v / %v", errA, errB)
	}
	return a, b
}
