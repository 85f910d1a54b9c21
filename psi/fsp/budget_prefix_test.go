package fsp

import (
	"net/netip"
	"testing"
	"time"
)

// TestBudgetPrefixShare: a host with many addresses in one /24 (or an
// IPv6 /48) cannot commit the whole memory budget by using four of them;
// a client from another prefix still fits (issue 10: each peer has a
// share).
func TestBudgetPrefixShare(t *testing.T) {
	for _, base := range []string{"127.9.0.0", "2001:db8::"} {
		b := newBudget(64 << 20)
		pfx := netip.MustParseAddr(base)
		for i := range 64 {
			a := pfx.As16()
			a[15] = byte(i + 1)
			addr := netip.AddrFrom16(a)
			if pfx.Is4() {
				addr = addr.Unmap()
				v := pfx.As4()
				v[3] = byte(i + 1)
				addr = netip.AddrFrom4(v)
			}
			for b.take(addr, connCharge()) {
			}
		}
		if b.used > b.limit/2 {
			t.Errorf("%s: one prefix committed %d of %d", base, b.used, b.limit)
		}
		other := netip.MustParseAddr("127.250.0.1")
		if !b.take(other, connCharge()) {
			t.Errorf("%s: a client from another prefix is refused with %d of %d committed", base, b.used, b.limit)
		}
		b.give(other, connCharge())
	}
}

// TestHandshakeLimiterNoSharing: sources that drained their buckets do not
// drain a newcomer's; each source holds a slot of its own while the
// table has room (before, buckets were shared by hash, so a flood from
// 32 prefixes of 4 addresses drained about one honest client in four).
func TestHandshakeLimiterNoSharing(t *testing.T) {
	now := time.Now()
	honest := netip.MustParseAddr("127.0.0.1")
	refused := 0
	for range 20 {
		var h handshakeLimiter
		for p := range 32 {
			for a := range 4 {
				addr := netip.AddrFrom4([4]byte{127, 3, byte(p), byte(1 + a)})
				for h.allowFrom(addr, now, 100) {
				}
			}
		}
		if !h.allowFrom(honest, now, 100) {
			refused++
		}
	}
	if refused > 1 {
		t.Fatalf("the honest address was refused by %d of 20 limiters", refused)
	}
}
