package hsrate

import (
	"net/netip"
	"testing"
)

func TestConns(t *testing.T) {
	c := NewConns(2)
	a, b := netip.MustParseAddr("2001:db8:0:1::1"), netip.MustParseAddr("2001:db8:0:1::2")
	r1, r2 := c.Acquire(a), c.Acquire(b)
	if r1 == nil || r2 == nil {
		t.Fatal("the first two of a /64 refused")
	}
	if c.Acquire(a) != nil {
		t.Fatal("a third from one /64 counted")
	}
	if r := c.Acquire(netip.MustParseAddr("2001:db8:0:2::1")); r == nil {
		t.Fatal("another /64 refused")
	} else {
		r()
	}
	r1()
	r1() // once only
	if got := c.Of(b); got != 1 {
		t.Fatalf("%d counted after one of two released twice, want 1", got)
	}
	r2()
	if c.Sources() != 0 {
		t.Fatalf("%d sources left after all released", c.Sources())
	}
}

// TestConnsTotal: WithTotal bounds the connections in all and a prefix's
// to a quarter of them (more than a source's 2 here), and a release makes
// room again.
func TestConnsTotal(t *testing.T) {
	if c := NewConns(1024).WithTotal(16); c.perPrefix != 16 {
		t.Fatalf("a prefix may hold %d of 16, less than one source's bound", c.perPrefix)
	}
	c := NewConns(2).WithTotal(16)
	var rel []func()
	for i := range 5 {
		r := c.Acquire(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
		if i < 4 && r == nil {
			t.Fatalf("connection %d of 10.0.0.0/24 refused", i)
		}
		if i == 4 && r != nil {
			t.Fatal("a fifth connection of 10.0.0.0/24 admitted, over its quarter")
		}
		rel = append(rel, r)
	}
	for p := 1; p < 4; p++ {
		for i := range 4 {
			if c.Acquire(netip.AddrFrom4([4]byte{10, 0, byte(p), byte(i)})) == nil {
				t.Fatalf("10.0.%d.%d refused below the total", p, i)
			}
		}
	}
	if c.Total() != 16 || c.Acquire(netip.MustParseAddr("10.9.0.1")) != nil {
		t.Fatalf("total %d; a 17th connection admitted", c.Total())
	}
	rel[0]()
	rel[0]()
	if c.Total() != 15 || c.Acquire(netip.MustParseAddr("10.9.0.1")) == nil {
		t.Fatalf("total %d after a release; no room made", c.Total())
	}
}
