package hsrate

import (
	"net/netip"
	"testing"
	"time"
)

// TestCharge: a source charged for abuse owes handshakes for as long as
// its own rate takes to refill the charge, however few it started, and
// its neighbours, in its /24 too, keep theirs.
func TestCharge(t *testing.T) {
	var l Limiter
	now := time.Now()
	bad, next := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if l.Owes(bad, now, 100) {
		t.Fatal("owes before any charge")
	}
	l.Charge(bad, now, 100, 2*time.Second)
	l.Charge(bad, now, 100, 2*time.Second) // 25 tokens held, 100 charged
	for _, c := range []struct {
		after time.Duration
		owes  bool
	}{{0, true}, {2900 * time.Millisecond, true}, {3100 * time.Millisecond, false}} {
		at := now.Add(c.after)
		if got := l.Owes(bad, at, 100); got != c.owes {
			t.Errorf("%v after: owes %v, want %v", c.after, got, c.owes)
		}
		if l.Owes(next, at, 100) || !l.Allow(next, at, 100) {
			t.Errorf("%v after: the neighbour was held off", c.after)
		}
	}
	if l.Allow(bad, now.Add(2900*time.Millisecond), 100) {
		t.Error("Allow took a token from a source in debt")
	}
	l.Charge(bad, now, 100, time.Hour)
	if at := now.Add(MaxDebt + time.Second); l.Owes(bad, at, 100) {
		t.Errorf("a charge of an hour held the source past MaxDebt")
	}
}

// TestChargeKeepsSlot: a source in debt keeps its bucket past a second
// idle, so that a key hashing to the same slots cannot wipe its debt.
func TestChargeKeepsSlot(t *testing.T) {
	var l Limiter
	now := time.Now()
	bad := netip.MustParseAddr("192.0.2.1")
	l.Charge(bad, now, 100, 10*time.Second)
	later := now.Add(5 * time.Second)
	ns, _ := l.init(later, 100)
	// Every other key's slot look-up, over all slots, leaves bad's.
	for i := range 1 << 16 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		l.slot(l.hosts[:], netip.PrefixFrom(a, 32), ns, false)
	}
	if !l.Owes(bad, later, 100) {
		t.Fatal("the debt was lost to other keys taking its slot")
	}
}
