package hsrate

import (
	"net/netip"
	"testing"
	"time"
)

// TestAllow: a source gets a quarter of its prefix's rate, its
// neighbours the rest, and tokens come back with time.
func TestAllow(t *testing.T) {
	var l Limiter
	now := time.Now()
	count := func(a string) int {
		n := 0
		for l.Allow(netip.MustParseAddr(a), now, 100) {
			n++
		}
		return n
	}
	if n := count("192.0.2.1"); n != 25 {
		t.Fatalf("one source: %d, want 25", n)
	}
	if n := count("::ffff:192.0.2.1"); n != 0 {
		t.Fatalf("the same source, IPv4-mapped: %d more", n)
	}
	if n := count("192.0.2.2") + count("192.0.2.3") + count("192.0.2.4") + count("192.0.2.5"); n != 75 {
		t.Fatalf("the prefix's other sources: %d, want the 75 left", n)
	}
	if n := count("2001:db8:0:1::1") + count("2001:db8:0:1::2"); n != 25 {
		t.Fatalf("two addresses of one /64: %d, want 25", n)
	}
	now = now.Add(100 * time.Millisecond)
	if n := count("198.51.100.1"); n != 25 {
		t.Fatalf("another prefix: %d", n)
	}
	if !l.Allow(netip.MustParseAddr("192.0.2.1"), now, 100) {
		t.Fatal("no token came back after 100 ms")
	}
}
