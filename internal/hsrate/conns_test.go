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
