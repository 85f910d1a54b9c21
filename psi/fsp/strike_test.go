package fsp

import (
	"encoding/binary"
	"testing"
	"time"
)

func TestStrikeRegister(t *testing.T) {
	var r strikeRegister
	now := time.Unix(1e9, 0)
	nonce := func(i int) []byte { return binary.BigEndian.AppendUint64(make([]byte, 24), uint64(i)) }
	if v := r.check(nonce(0), now, now); v != strikeFresh {
		t.Fatalf("first sight: %v", v)
	}
	if v := r.check(nonce(0), now, now.Add(time.Second)); v != strikeReplay {
		t.Fatalf("replay: %v", v)
	}
	for _, sent := range []time.Time{now.Add(-strikeWindow - time.Millisecond), now.Add(strikeWindow + time.Millisecond)} {
		if v := r.check(nonce(1), sent, now); v != strikeUnknown {
			t.Fatalf("claim %v from now: %v", sent.Sub(now), v)
		}
	}
	// A copy inside the window is always caught: entries outlive it.
	if v := r.check(nonce(0), now, now.Add(strikeWindow)); v != strikeReplay {
		t.Fatalf("replay at the window's edge: %v", v)
	}
	// Entries expire, so memory stays bounded; past the bound, nothing
	// is taken unchecked.
	later := now.Add(3 * strikeWindow)
	if v := r.check(nonce(2), later, later); v != strikeFresh || r.len() != 1 {
		t.Fatalf("after expiry: %v, %d entries", v, r.len())
	}
	for i := 3; r.len() < maxStrikes; i++ {
		r.check(nonce(i), later, later)
	}
	if v := r.check(nonce(-1), later, later); v != strikeUnknown {
		t.Fatalf("full register: %v", v)
	}
}

func TestTicketKeys(t *testing.T) {
	var keys, other ticketKeys
	t0 := time.Unix(1e9, 0)
	tk := &ticket{secret: make([]byte, 32), chain: [][]byte{{1}}}
	tk.issued = t0
	a := keys.seal(tk, t0)
	if _, err := keys.open(a, t0.Add(ticketLifetime-time.Minute)); err != nil {
		t.Fatal("fresh ticket refused:", err)
	}
	tk.issued = t0.Add(ticketLifetime - time.Minute)
	b := keys.seal(tk, tk.issued)
	after := t0.Add(ticketLifetime + time.Minute) // the key rotated
	if _, err := keys.open(a, after); err == nil {
		t.Fatal("expired ticket opened")
	}
	if got, err := keys.open(b, after); err != nil || len(got.chain) != 1 {
		t.Fatal("ticket under the previous key refused:", err)
	}
	if _, err := other.open(b, after); err == nil {
		t.Fatal("another listener opened the ticket")
	}
	b[len(b)-1] ^= 1
	if _, err := keys.open(b, after); err == nil {
		t.Fatal("a corrupted ticket opened")
	}
}
