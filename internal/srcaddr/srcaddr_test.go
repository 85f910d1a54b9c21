package srcaddr

import (
	"net/netip"
	"testing"
)

func TestFor(t *testing.T) {
	remote := netip.MustParseAddrPort("127.0.0.1:9")
	if got := For(netip.MustParseAddrPort("0.0.0.0:1234"), remote); got != netip.MustParseAddrPort("127.0.0.1:1234") {
		t.Errorf("unspecified v4: %v", got)
	}
	if got := For(netip.MustParseAddrPort("[::]:1234"), remote); got != netip.MustParseAddrPort("127.0.0.1:1234") {
		t.Errorf("unspecified v6 to v4: %v", got)
	}
	bound := netip.MustParseAddrPort("127.0.0.2:5")
	if got := For(bound, remote); got != bound {
		t.Errorf("bound: %v", got)
	}
	var c Cache
	for range 2 {
		if got := c.For(netip.MustParseAddrPort("0.0.0.0:1234"), remote); got != netip.MustParseAddrPort("127.0.0.1:1234") {
			t.Errorf("cached: %v", got)
		}
	}
}
