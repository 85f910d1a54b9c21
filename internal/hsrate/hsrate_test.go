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

// TestAllowClockStep: a step back of a wall clock (times without
// monotonic readings) neither refuses a source for the length of the
// step nor refills its bucket. Before, an hour's step back left the
// source's bucket 90,000 tokens short: refused for an hour.
func TestAllowClockStep(t *testing.T) {
	var l Limiter
	wall := time.Now().Round(0)
	a := netip.MustParseAddr("192.0.2.1")
	for l.Allow(a, wall, 100) {
	}
	back := wall.Add(-time.Hour)
	if l.Allow(a, back, 100) {
		t.Fatal("the step back refilled the bucket")
	}
	if !l.Allow(a, back.Add(time.Second), 100) {
		t.Fatal("a second after an hour's step back, still refused")
	}
}

// TestAllowKeepsRefusedTokens: a source refused because its prefix is
// drained keeps its own tokens, and gets the prefix's share once it
// refills. Before, each refused try took a token of its own: 30 tries
// left it 5 of the 20 the prefix had 200 ms later.
func TestAllowKeepsRefusedTokens(t *testing.T) {
	var l Limiter
	now := time.Now()
	for _, a := range []string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"} {
		for l.Allow(netip.MustParseAddr(a), now, 100) {
		}
	}
	x := netip.MustParseAddr("192.0.2.1")
	for range 30 {
		if l.Allow(x, now, 100) {
			t.Fatal("allowed from a drained prefix")
		}
	}
	now = now.Add(200 * time.Millisecond)
	n := 0
	for l.Allow(x, now, 100) {
		n++
	}
	if n != 20 {
		t.Fatalf("%d allowed once the prefix refilled 20, want 20", n)
	}
}
