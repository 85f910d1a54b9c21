package fsp

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// Stateless resets are bounded per peer address (an IPv4 address or an
// IPv6 /64) and in all: they cost a MAC each, and an attacker spraying
// unknown ALFIDs must not learn tokens at line rate. A reset refused
// here leaves as a plain RESET, as before stateless resets existed.
const (
	resetsPerAddr   = 64   // a second, and the burst
	resetsAll       = 1024 // a second, and the burst
	resetAddrTables = 256  // buckets addresses hash into
)

// resetLimiter is a token bucket for all resets and a fixed table of
// buckets that addresses hash into, so its memory does not grow with
// the addresses seen (two addresses sharing a bucket share its rate).
type resetLimiter struct {
	mu   sync.Mutex
	seed maphash.Seed
	all  resetBucket
	by   [resetAddrTables]resetBucket
}

type resetBucket struct {
	tokens float64
	at     int64 // nanoseconds of the last refill
}

func (l *resetLimiter) init() { l.seed = maphash.MakeSeed() }

// allow reports whether a reset to addr may leave now, and takes it.
func (l *resetLimiter) allow(addr netip.Addr) bool {
	now := time.Now().UnixNano()
	var h [16]byte
	if addr.IsValid() {
		h = pendingHost(addr).As16()
	}
	b := &l.by[maphash.Bytes(l.seed, h[:])%resetAddrTables]
	l.mu.Lock()
	defer l.mu.Unlock()
	if !b.ready(now, resetsPerAddr) || !l.all.ready(now, resetsAll) {
		return false
	}
	b.tokens--
	l.all.tokens--
	return true
}

// ready refills b at rate a second, up to rate, and reports whether it
// holds a token.
func (b *resetBucket) ready(now int64, rate float64) bool {
	if b.at == 0 {
		b.tokens = rate
	} else if d := now - b.at; d > 0 {
		b.tokens = min(rate, b.tokens+float64(d)*rate/1e9)
	}
	b.at = now
	return b.tokens >= 1
}
