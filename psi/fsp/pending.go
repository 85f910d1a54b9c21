package fsp

import (
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
)

// Default quotas of the pending table (see Config.MaxPending).
const (
	defaultMaxPending          = 4096
	defaultMaxPendingPerAddr   = 32
	defaultMaxPendingPerPrefix = 128
	defaultHandshakeRate       = hsrate.DefaultRate
	// pendingMinAge protects a fresh entry from eviction: its client may
	// hold the answer already and be about to confirm.
	pendingMinAge = time.Second
)

// pendingTable holds the responder connections between ACK_CONNECT_REQ
// and the client's first protected packet. The cookie proved each
// client's address, but not that it will finish, so every source address
// and every prefix (/24 for IPv4, /48 for IPv6) gets a bounded share.
// Past a quota the table makes room from whoever holds the most: past
// the address quota the address's own oldest entry goes; past the prefix
// quota the oldest of the prefix's largest address; past the table size
// the oldest of the largest prefix. An entry younger than pendingMinAge
// (its client may be about to confirm) is only taken from a holder
// larger than the requester's own; otherwise the new request is dropped
// and its client retransmits. So a flood only ever displaces entries of
// its own address or prefix, nobody gets a refusal, and a client whose
// address and prefix hold less than the flood's always gets in.
// Guarded by Transport.mu.
type pendingTable struct {
	byKey    map[pendingKey]*Conn
	byPrefix map[netip.Prefix][]pendingEntry // oldest first
	perAddr  map[netip.Addr]int
}

type pendingEntry struct {
	c  *Conn
	at time.Time
}

// pendingHost returns what counts as one source address: the address
// itself for IPv4, its /64 for IPv6 (hsrate.Host).
func pendingHost(a netip.Addr) netip.Addr { return hsrate.Host(a) }

// pendingPrefix returns the /24 or /48 an address is counted under;
// every non-IP address shares the zero prefix (hsrate.Prefix).
func pendingPrefix(a netip.Addr) netip.Prefix { return hsrate.Prefix(a) }

func (pt *pendingTable) len() int { return len(pt.byKey) }

func (pt *pendingTable) get(k pendingKey) *Conn { return pt.byKey[k] }

// makeRoom evicts what a new entry from addr needs and reports whether
// there is room. The caller tears the evicted connections down once
// Transport.mu is released.
func (pt *pendingTable) makeRoom(addr netip.Addr, now time.Time, cfg *Config) (evicted []*Conn, ok bool) {
	addr = pendingHost(addr)
	pfx := pendingPrefix(addr)
	perAddr, perPrefix, total := cfg.pendingQuotas()
	for pt.perAddr[addr] >= perAddr {
		if !pt.evict(pfx, addr, false, now, &evicted) {
			return evicted, false
		}
	}
	for len(pt.byPrefix[pfx]) >= perPrefix {
		big := pt.largestAddr(pfx)
		if !pt.evict(pfx, big, pt.perAddr[big] > pt.perAddr[addr], now, &evicted) {
			return evicted, false
		}
	}
	for len(pt.byKey) >= total {
		big := pt.largestPrefix()
		if !pt.evict(big, netip.Addr{}, len(pt.byPrefix[big]) > len(pt.byPrefix[pfx]), now, &evicted) {
			return evicted, false
		}
	}
	return evicted, true
}

// add records c under k; call makeRoom first.
func (pt *pendingTable) add(k pendingKey, c *Conn, now time.Time) {
	if pt.byKey == nil {
		pt.byKey = make(map[pendingKey]*Conn)
		pt.byPrefix = make(map[netip.Prefix][]pendingEntry)
		pt.perAddr = make(map[netip.Addr]int)
	}
	addr := pendingHost(k.addr.Addr())
	pfx := pendingPrefix(addr)
	c.pendKey = k
	pt.byKey[k] = c
	pt.byPrefix[pfx] = append(pt.byPrefix[pfx], pendingEntry{c, now})
	pt.perAddr[addr]++
}

// largestPrefix returns the prefix with the most entries.
func (pt *pendingTable) largestPrefix() netip.Prefix {
	var best netip.Prefix
	n := -1
	for p, q := range pt.byPrefix {
		if len(q) > n {
			best, n = p, len(q)
		}
	}
	return best
}

// largestAddr returns the address of pfx with the most entries.
func (pt *pendingTable) largestAddr(pfx netip.Prefix) netip.Addr {
	var best netip.Addr
	for _, e := range pt.byPrefix[pfx] {
		if a := pendingHost(e.c.pendKey.addr.Addr()); pt.perAddr[a] > pt.perAddr[best] {
			best = a
		}
	}
	return best
}

// evict forgets the oldest entry of pfx (of address addr only, if addr is
// valid) and appends it to evicted. Unless force is set, only an entry
// older than pendingMinAge goes. It reports whether one went.
func (pt *pendingTable) evict(pfx netip.Prefix, addr netip.Addr, force bool, now time.Time, evicted *[]*Conn) bool {
	for _, e := range pt.byPrefix[pfx] {
		if addr.IsValid() && pendingHost(e.c.pendKey.addr.Addr()) != addr {
			continue
		}
		if !force && now.Sub(e.at) < pendingMinAge {
			return false
		}
		pt.remove(e.c)
		*evicted = append(*evicted, e.c)
		return true
	}
	return false
}

// remove forgets c if it is pending.
func (pt *pendingTable) remove(c *Conn) {
	k := c.pendKey
	if k == (pendingKey{}) || pt.byKey[k] != c {
		return
	}
	delete(pt.byKey, k)
	addr := pendingHost(k.addr.Addr())
	if pt.perAddr[addr]--; pt.perAddr[addr] <= 0 {
		delete(pt.perAddr, addr)
	}
	pfx := pendingPrefix(addr)
	q := pt.byPrefix[pfx]
	for i, e := range q {
		if e.c == c {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(pt.byPrefix, pfx)
	} else {
		pt.byPrefix[pfx] = q
	}
}

// handshakeLimiter shares the listener's costly work, a key exchange and
// a signature per CONNECT_REQUEST, between prefixes and between the
// sources of a prefix (internal/hsrate, as the QUIC and TCP listeners).
// Read loop only.
type handshakeLimiter struct{ l hsrate.Limiter }

// allowFrom takes a token for a handshake from a.
func (h *handshakeLimiter) allowFrom(a netip.Addr, now time.Time, rate int) bool {
	return h.l.Allow(a, now, rate)
}

// rateAbove is the number of pending handshakes past which a listener
// holds sources to its handshake rate, as the QUIC and TCP listeners do:
// below it the workers have room, and a client that dials one handshake
// after another (a benchmark, a proxy for many users) is not slowed.
const rateAbove = 8

// allowHandshake reports whether a handshake from a may start now: always
// while fewer than rateAbove are pending, else within the rate. Read
// loop only.
func (t *Transport) allowHandshake(a netip.Addr, now time.Time, rate int) bool {
	t.mu.Lock()
	busy := t.pending.len() >= rateAbove
	t.mu.Unlock()
	return !busy || t.limiter.allowFrom(a, now, rate)
}
