package fsp

import (
	"net/netip"
)

// Default quotas of the pending table (see Config.MaxPending).
const (
	defaultMaxPending          = 4096
	defaultMaxPendingPerAddr   = 8
	defaultMaxPendingPerPrefix = 64
)

// pendingTable holds the responder connections between ACK_CONNECT_REQ
// and the client's first protected packet. The cookie proved each
// client's address, but not that it will finish, so every source address
// and every prefix (/24 for IPv4, /48 for IPv6) gets a bounded share.
// Adding never fails: past a quota the oldest entry of the same address
// is forgotten, else the oldest of the same prefix, else (table full) the
// oldest of the prefix holding the most. A flood therefore only ever
// evicts its own entries, or those of the largest prefix; a client whose
// entry is forgotten retransmits CONNECT_REQUEST and gets a new one.
// Guarded by Transport.mu.
type pendingTable struct {
	byKey    map[pendingKey]*Conn
	byPrefix map[netip.Prefix][]*Conn // oldest first
	perAddr  map[netip.Addr]int
}

// pendingPrefix returns the prefix an address is counted under; every
// non-IP address shares the zero prefix.
func pendingPrefix(a netip.Addr) netip.Prefix {
	switch {
	case a.Is4():
		p, _ := a.Prefix(24)
		return p
	case a.Is6():
		p, _ := a.Prefix(48)
		return p
	}
	return netip.Prefix{}
}

func (pt *pendingTable) len() int { return len(pt.byKey) }

func (pt *pendingTable) get(k pendingKey) *Conn { return pt.byKey[k] }

// add records c under k and returns the connections evicted to make room,
// which the caller tears down once Transport.mu is released.
func (pt *pendingTable) add(k pendingKey, c *Conn, cfg *Config) (evicted []*Conn) {
	if pt.byKey == nil {
		pt.byKey = make(map[pendingKey]*Conn)
		pt.byPrefix = make(map[netip.Prefix][]*Conn)
		pt.perAddr = make(map[netip.Addr]int)
	}
	addr := k.addr.Addr()
	pfx := pendingPrefix(addr)
	perAddr, perPrefix, total := cfg.pendingQuotas()
	for pt.perAddr[addr] >= perAddr && pt.evictOldest(pfx, addr, true, &evicted) {
	}
	for len(pt.byPrefix[pfx]) >= perPrefix && pt.evictOldest(pfx, addr, false, &evicted) {
	}
	for len(pt.byKey) >= total && pt.evictOldest(pt.largest(), addr, false, &evicted) {
	}
	c.pendKey = k
	pt.byKey[k] = c
	pt.byPrefix[pfx] = append(pt.byPrefix[pfx], c)
	pt.perAddr[addr]++
	return evicted
}

// largest returns the prefix with the most entries.
func (pt *pendingTable) largest() netip.Prefix {
	var best netip.Prefix
	n := -1
	for p, q := range pt.byPrefix {
		if len(q) > n {
			best, n = p, len(q)
		}
	}
	return best
}

// evictOldest forgets the oldest entry of pfx (of address addr only, if
// sameAddr) and appends it to evicted; false if there was none.
func (pt *pendingTable) evictOldest(pfx netip.Prefix, addr netip.Addr, sameAddr bool, evicted *[]*Conn) bool {
	for _, c := range pt.byPrefix[pfx] {
		if !sameAddr || c.pendKey.addr.Addr() == addr {
			pt.remove(c)
			*evicted = append(*evicted, c)
			return true
		}
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
	addr := k.addr.Addr()
	if pt.perAddr[addr]--; pt.perAddr[addr] <= 0 {
		delete(pt.perAddr, addr)
	}
	pfx := pendingPrefix(addr)
	q := pt.byPrefix[pfx]
	for i, e := range q {
		if e == c {
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
