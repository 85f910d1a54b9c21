// Package hsrate limits how many costly handshakes (a key exchange and
// a signature each) a listener runs a second for each source and each
// prefix, in bounded memory whatever the sources. Every stack's listener
// uses it (FSP, QUIC, TCP), so they refuse the same floods.
package hsrate

import (
	"hash/maphash"
	"net/netip"
	"time"
)

// DefaultRate is the handshakes a second a prefix may start by default.
const DefaultRate = 100

const (
	slots     = 4096 // hosts, and prefixes
	wideSlots = 1024
)

// Limiter shares handshakes between prefixes (/24 for IPv4, /48 for
// IPv6) and between the sources of a prefix: each prefix has a token
// bucket of rate tokens a second, holding at most rate, and each source
// (Host: an IPv4 address, an IPv6 /64) one of a quarter of that.
// Buckets sit in fixed arrays: a key may use any of four slots chosen
// by a keyed hash, and keeps the one it holds (tagged with its hash)
// until it has been idle for a second (its bucket full again) and owes
// nothing (Charge). A bucket is never shared: a key whose four slots
// are all held by busy others goes without. A source without a slot of its own is limited by its
// prefix alone; a prefix without one, by its wide prefix's bucket (a /16
// for IPv4, a /32 for IPv6, in an array of its own). So one attacker
// spraying requests from more sources or prefixes than there are slots
// drains only buckets of its own, down to its /16 or /32, and an honest
// client elsewhere keeps its rate; only sources spread over more than
// about wideSlots/2 busy /16s or /32s (a botnet) make newcomers share a
// wide bucket. The zero Limiter is ready; it is not safe for concurrent
// use.
type Limiter struct {
	seed     maphash.Seed
	epoch    time.Time // times count from it, monotonic where now is
	hosts    *[slots]bucket
	prefixes *[slots]bucket
	wide     *[wideSlots]bucket
}

type bucket struct {
	tag    uint64 // hash of the key holding it; 0 when free
	tokens float64
	last   int64 // UnixNano of the last refill
	owed   int64 // ns until which a Charge left it in debt
}

// Host returns what counts as one source: the address itself for IPv4,
// its /64 for IPv6, where a host holds a whole /64.
func Host(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Prefix returns the prefix a source shares with its neighbours: /24
// for IPv4, /48 for IPv6; every non-IP address shares the zero prefix.
func Prefix(a netip.Addr) netip.Prefix { return prefix(a, 24, 48) }

// wide returns the prefix a source is counted under when its prefix has
// no bucket: /16 for IPv4, /32 for IPv6.
func wide(a netip.Addr) netip.Prefix { return prefix(a, 16, 32) }

func prefix(a netip.Addr, v4, v6 int) netip.Prefix {
	a = a.Unmap()
	bits := v6
	if a.Is4() {
		bits = v4
	} else if !a.Is6() {
		return netip.Prefix{}
	}
	p, _ := a.Prefix(bits)
	return p
}

// Allow takes a token for a handshake from a at now from a's own bucket
// (Host), refilled at a quarter of rate, and one from its prefix's, or
// neither if either is empty: a source refused for its prefix keeps its
// own tokens. One address flooding thus takes at most a quarter of its
// prefix's share, and its neighbours keep the rest.
func (l *Limiter) Allow(a netip.Addr, now time.Time, rate int) bool {
	ns, rate := l.init(now, rate)
	host := Host(a)
	hb := l.slot(l.hosts[:], netip.PrefixFrom(host, host.BitLen()), ns, false)
	if hb != nil && !hb.refill(ns, max(rate/4, 1)) {
		return false
	}
	pb := l.slot(l.prefixes[:], Prefix(a), ns, false)
	if pb == nil {
		pb = l.slot(l.wide[:], wide(a), ns, true)
	}
	if !pb.refill(ns, rate) {
		return false
	}
	if hb != nil {
		hb.tokens--
	}
	pb.tokens--
	return true
}

func (l *Limiter) init(now time.Time, rate int) (int64, int) {
	if l.hosts == nil {
		l.seed = maphash.MakeSeed()
		l.epoch = now.Add(-time.Second)
		l.hosts = new([slots]bucket)
		l.prefixes = new([slots]bucket)
		l.wide = new([wideSlots]bucket)
	}
	if rate <= 0 {
		rate = DefaultRate
	}
	// Against the epoch, not UnixNano: a step of the wall clock must
	// not drain or fill the buckets.
	return int64(now.Sub(l.epoch)), rate
}

// MaxDebt bounds what Charge may leave a source owing.
const MaxDebt = time.Minute

// Charge makes a, whose connection the listener closed for abuse, pay
// for it with d of its own handshakes (d times a quarter of rate): its
// bucket goes into debt, up to MaxDebt, and Owes holds it off until the
// debt is refilled. A source without a bucket of its own is charged on
// its prefix's. So an attacker that dials again as each connection is
// closed gets one a d, and honest sources elsewhere keep their rate.
func (l *Limiter) Charge(a netip.Addr, now time.Time, rate int, d time.Duration) {
	ns, rate := l.init(now, rate)
	b, r := l.own(a, ns, rate)
	if b == nil {
		return
	}
	b.refill(ns, r)
	b.tokens = max(b.tokens-float64(r)*d.Seconds(), -float64(r)*MaxDebt.Seconds())
	if b.tokens < 0 {
		b.owed = ns + int64(-b.tokens/float64(r)*1e9)
	}
}

// Owes reports whether a is in debt at now for a Charge: it may start
// no handshake, however few are in progress.
func (l *Limiter) Owes(a netip.Addr, now time.Time, rate int) bool {
	ns, rate := l.init(now, rate)
	b, _ := l.own(a, ns, rate)
	return b != nil && ns < b.owed
}

// own returns a's own bucket, or its prefix's if it has none, and the
// rate it refills at.
func (l *Limiter) own(a netip.Addr, ns int64, rate int) (*bucket, int) {
	host := Host(a)
	if b := l.slot(l.hosts[:], netip.PrefixFrom(host, host.BitLen()), ns, false); b != nil {
		return b, max(rate/4, 1)
	}
	return l.slot(l.prefixes[:], Prefix(a), ns, false), rate
}

// choices is how many slots a key may use. With two, 32 busy /16s left
// an honest /16 sharing a drained wide bucket in about 1 run of 1,000
// per honest prefix; with four, about 1 in a million.
const choices = 4

// slot returns the bucket key p holds in table, taking a free or idle
// one of its choices; nil if all are held by busy others, unless share
// is set, when it is the first of them.
func (l *Limiter) slot(table []bucket, p netip.Prefix, ns int64, share bool) *bucket {
	h := maphash.Comparable(l.seed, p)
	tag := h | 1 // never 0, the free mark
	n := uint64(len(table))
	var at [choices]*bucket
	for i := range at {
		// 16 bits of the hash each: tables hold at most 65,536 slots.
		at[i] = &table[(h>>(16*i))%n]
		if at[i].tag == tag {
			return at[i]
		}
	}
	for _, b := range at {
		if b.tag == 0 || ns-b.last >= 1e9 && ns >= b.owed {
			*b = bucket{tag: tag}
			return b
		}
	}
	if share {
		return at[0]
	}
	return nil
}

// refill refills b at rate tokens a second, up to rate, and reports
// whether it holds a token. Time going back (a caller's clock without
// monotonic readings) refills nothing and takes nothing away.
func (b *bucket) refill(ns int64, rate int) bool {
	if b.last == 0 {
		b.tokens = float64(rate)
	} else {
		b.tokens = min(float64(rate), b.tokens+float64(rate)*float64(max(ns-b.last, 0))/1e9)
	}
	b.last = ns
	return b.tokens >= 1
}
