package strike

import (
	"encoding/binary"
	"testing"
	"time"
)

func TestStrikeRegister(t *testing.T) {
	r := New(10*time.Second, 1<<10)
	now := time.Unix(1e9, 0)
	nonce := func(i int) []byte { return binary.BigEndian.AppendUint64(make([]byte, 24), uint64(i)) }
	if v := r.Check(nonce(0), now, now); v != Fresh {
		t.Fatalf("first sight: %v", v)
	}
	if v := r.Check(nonce(0), now, now.Add(time.Second)); v != Replay {
		t.Fatalf("replay: %v", v)
	}
	for _, sent := range []time.Time{now.Add(-r.window - time.Millisecond), now.Add(r.window + time.Millisecond)} {
		if v := r.Check(nonce(1), sent, now); v != Unknown {
			t.Fatalf("claim %v from now: %v", sent.Sub(now), v)
		}
	}
	// A copy inside the window is always caught: entries outlive it.
	if v := r.Check(nonce(0), now, now.Add(r.window)); v != Replay {
		t.Fatalf("replay at the window's edge: %v", v)
	}
	// Entries expire, so memory stays bounded; past the bound, nothing
	// is taken unchecked.
	later := now.Add(3 * r.window)
	if v := r.Check(nonce(2), later, later); v != Fresh || r.Len() != 1 {
		t.Fatalf("after expiry: %v, %d entries", v, r.Len())
	}
	for i := 3; r.Len() < r.max; i++ {
		r.Check(nonce(i), later, later)
	}
	if v := r.Check(nonce(-1), later, later); v != Unknown {
		t.Fatalf("full register: %v", v)
	}
}
