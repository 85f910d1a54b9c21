package fsp

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Anti-replay for resumption (RFC 8446 §8.2 and §8.3): a RESTORE names
// when it was sent as the ticket's issue time plus the age the client
// measured. A listener takes it only if that time is within strikeWindow
// of its own clock, and only once: the strike register remembers each
// accepted RESTORE's nonce for as long as a copy could still fall within
// the window. The register is bounded; when full, a RESTORE is sent to
// a full handshake instead, never accepted unchecked.
const (
	strikeWindow = 10 * time.Second
	maxStrikes   = 1 << 14
)

type strikeVerdict uint8

const (
	strikeFresh   strikeVerdict = iota // first sight, within the window: take it
	strikeReplay                       // seen before: drop it
	strikeUnknown                      // outside the window or register full: full handshake
)

type strikeRegister struct {
	mu    sync.Mutex
	seen  map[[16]byte]struct{}
	queue []strike // insertion order; expiries are monotone
	head  int
}

type strike struct {
	id  [16]byte
	exp time.Time
}

// check records nonce if sent (the client's claim) is within the window
// of now and the nonce is new.
func (r *strikeRegister) check(nonce []byte, sent, now time.Time) strikeVerdict {
	if d := now.Sub(sent); d > strikeWindow || d < -strikeWindow {
		return strikeUnknown
	}
	sum := sha256.Sum256(nonce)
	id := [16]byte(sum[:16])
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.head < len(r.queue) && now.After(r.queue[r.head].exp) {
		delete(r.seen, r.queue[r.head].id)
		r.queue[r.head] = strike{}
		r.head++
	}
	if r.head > len(r.queue)/2 {
		r.queue = append(r.queue[:0], r.queue[r.head:]...)
		r.head = 0
	}
	if _, ok := r.seen[id]; ok {
		return strikeReplay
	}
	if len(r.seen) >= maxStrikes {
		return strikeUnknown
	}
	if r.seen == nil {
		r.seen = make(map[[16]byte]struct{})
	}
	r.seen[id] = struct{}{}
	// A copy is inside the window until sent+strikeWindow, which is at
	// most now+2*strikeWindow; the later bound keeps expiries monotone.
	r.queue = append(r.queue, strike{id, now.Add(2 * strikeWindow)})
	return strikeFresh
}

func (r *strikeRegister) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}
