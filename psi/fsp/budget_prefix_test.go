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

// TestPendingIPv6Host: the addresses of one IPv6 /64 are one source for
// the handshake rate and the pending quota, so a host cycling through
// its /64 gets a quarter of its /48's rate and one address's entries,
// and a neighbour in another /64 of the same /48 still gets in.
func TestPendingIPv6Host(t *testing.T) {
	now := time.Now()
	var h handshakeLimiter
	allowed := 0
	for i := range 200 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 15: byte(i + 1)})
		if h.allowFrom(a, now, 100) {
			allowed++
		}
	}
	if allowed != 25 {
		t.Fatalf("one /64 got %d handshakes of a /48's 100 a second, want 25", allowed)
	}
	if !h.allowFrom(netip.MustParseAddr("2001:db8:0:2::1"), now, 100) {
		t.Fatal("a neighbour in another /64 of the /48 was refused")
	}

	cfg := &Config{}
	perAddr, _, _ := cfg.pendingQuotas()
	var pt pendingTable
	for i := range perAddr {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 14: byte(i >> 8), 15: byte(i + 1)})
		if _, ok := pt.makeRoom(a, now, cfg); !ok {
			t.Fatalf("entry %d of one /64 found no room", i)
		}
		pt.add(pendingKey{netip.AddrPortFrom(a, 1), 0x10000}, &Conn{}, now)
	}
	if _, ok := pt.makeRoom(netip.MustParseAddr("2001:db8:0:1::ffff"), now, cfg); ok {
		t.Fatal("a /64 holding its quota of fresh entries got one more from a new address")
	}
	if _, ok := pt.makeRoom(netip.MustParseAddr("2001:db8:0:2::1"), now, cfg); !ok {
		t.Fatal("a neighbour in another /64 found no room")
	}
}

// TestBudgetIPv6Host: the addresses of one IPv6 /64 share one peer's
// part of the budget, so a neighbour in another /64 of the /48 still
// fits.
func TestBudgetIPv6Host(t *testing.T) {
	b := newBudget(64 << 20)
	for i := range 64 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 15: byte(i + 1)})
		for b.take(a, connCharge()) {
		}
	}
	if b.used > b.share {
		t.Fatalf("one /64 committed %d, over a peer's share of %d", b.used, b.share)
	}
	if !b.take(netip.MustParseAddr("2001:db8:0:2::1"), connCharge()) {
		t.Fatal("a neighbour in another /64 of the /48 was refused")
	}
}

// TestHandshakeLimiterSpray: one attacker sprays valid requests from
// more busy sources than the limiter has slots, in a handful of /16
// (IPv4) or /32 (IPv6) prefixes, each source draining its buckets, and
// keeps at it; honest clients elsewhere are still allowed, every time.
// Before, a newcomer whose two slots were held by busy sources shared a
// bucket the attacker had drained: refused for as long as the spray went
// on.
func TestHandshakeLimiterSpray(t *testing.T) {
	sprays := map[string]func(i int) netip.Addr{
		"IPv4, 4 to a /24, in 8 /16s": func(i int) netip.Addr {
			return netip.AddrFrom4([4]byte{10, byte(i >> 10), byte(i >> 2), byte(1 + i&3)})
		},
		"IPv4, one to a /24, in 32 /16s": func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}) },
		"IPv6, 4 /64s to a /48, in 8 /32s": func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, byte(0xb0 + i>>11), byte(i >> 10), byte(i >> 2), 0, byte(i & 3), 15: 1})
		},
		"IPv6, one /64 to a /48, in 32 /32s": func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, byte(0xa0 + i>>8), 0, byte(i), 15: 1})
		},
	}
	for name, src := range sprays {
		var h handshakeLimiter
		now := time.Now()
		honest := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:dc9::1"), netip.MustParseAddr("2a00:1::5")}
		refused := 0
		for round := range 5 {
			now = now.Add(300 * time.Millisecond) // every source stays busy
			for i := range 8192 {
				for h.allowFrom(src(i), now, 100) {
				}
			}
			for _, a := range honest {
				if !h.allowFrom(a, now, 100) {
					refused++
					t.Logf("%s, round %d: %v refused", name, round, a)
				}
			}
		}
		if refused > 0 {
			t.Errorf("%s: honest clients refused %d times of %d while 8,192 sources sprayed", name, refused, 5*len(honest))
		}
	}
}
