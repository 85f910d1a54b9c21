// Package strike is a bounded anti-replay register for 0-RTT (RFC 8446
// §8): it takes an identifier once within a time window and refuses, or
// cannot judge, everything else. Memory is bounded by Max entries.
package strike

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Verdict is the outcome of Check.
type Verdict uint8

const (
	Fresh   Verdict = iota // first sight, within the window: take it
	Replay                 // seen before within the window: refuse it
	Unknown                // outside the window, or the register is full: refuse 0-RTT
)

// Register remembers identifiers for twice Window. The zero value is
// not usable; use New.
type Register struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	seen  map[[16]byte]struct{}
	queue []entry // insertion order; expiries are monotone
	head  int
}

type entry struct {
	id  [16]byte
	exp time.Time
}

// New returns a register taking claims within window of the clock and
// holding at most max identifiers.
func New(window time.Duration, max int) *Register {
	return &Register{window: window, max: max, seen: make(map[[16]byte]struct{})}
}

// Check records id if sent (the time the peer claims, or the ticket's
// issue time) is within the window of now and id is new.
func (r *Register) Check(id []byte, sent, now time.Time) Verdict {
	if d := now.Sub(sent); d > r.window || d < -r.window {
		return Unknown
	}
	sum := sha256.Sum256(id)
	key := [16]byte(sum[:16])
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.head < len(r.queue) && now.After(r.queue[r.head].exp) {
		delete(r.seen, r.queue[r.head].id)
		r.queue[r.head] = entry{}
		r.head++
	}
	if r.head > len(r.queue)/2 {
		r.queue = append(r.queue[:0], r.queue[r.head:]...)
		r.head = 0
	}
	if _, ok := r.seen[key]; ok {
		return Replay
	}
	if len(r.seen) >= r.max {
		return Unknown
	}
	r.seen[key] = struct{}{}
	// A copy is inside the window until sent+window, at most
	// now+2*window; the later bound keeps expiries monotone.
	r.queue = append(r.queue, entry{key, now.Add(2 * r.window)})
	return Fresh
}

// Len returns the number of identifiers held.
func (r *Register) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}
