package psitest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/postsockets/postsockets/psi"
)

// Connect dials ln with dial, through a relay made by relay (TCPRelay,
// UDPRelay) unless it is nil, and accepts: the conformance pair's two
// ends, closed with t. With a relay, the pair's DarkenPath is set to its
// Darken.
func Connect(t testing.TB, ctx context.Context, ln psi.Listener, dial func(netip.AddrPort) (psi.Transient, error), relay func(testing.TB, netip.AddrPort) *Relay) Pair {
	t.Helper()
	var p Pair
	addr := ln.Addr()
	if relay != nil {
		r := relay(t, addr)
		addr, p.DarkenPath = r.Addr(), r.Darken
	}
	a, err := dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	p.A, p.B = a, b
	return p
}
