package fsp

import (
	"testing"
	"time"
)

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
