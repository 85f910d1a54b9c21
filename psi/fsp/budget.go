package fsp

import (
	"net/netip"
	"sync"
)

// Memory costs the budget counts, in bytes.
const (
	// rxCost is one received packet a connection buffers, as the budget
	// counts it: a small pooled datagram buffer (smallBufSize, the
	// allocator's 1,536-byte class), the slice header it is pooled by
	// and its slots in the receive ring and the read queue, rounded up.
	// A connection that takes jumbo datagrams pays rxJumboCost instead
	// (conn_jumbo.go).
	rxCost = 1536 + 128
	// connBase is a connection's fixed state: the Conn, its sender,
	// receiver, timers and path table.
	connBase = 16 << 10
	// initialWindow is the receive window a connection advertises first,
	// in packets (about 135 KiB), and cloneWindow that of a clone (about
	// 22 KiB); they grow with the bandwidth-delay product.
	initialWindow = 96
	cloneWindow   = 16
	// baseWindow is the part of every window the budget holds from the
	// start: packets a connection buffers whatever the budget, so that
	// it always makes progress. The rest is charged as it fills (hold).
	baseWindow = 4
	// holdChunk is the packets a window's charge grows by at least, so
	// that a transfer takes the budget's lock once per chunk.
	holdChunk = 16
	// cloneCost is what a clone takes from the budget when it is made:
	// its fixed state and its base window, like a connection.
	cloneCost = connBase + baseWindow*rxCost
)

// budget is the memory a listener's peers may make it hold: every
// connection's and clone's fixed state and the received packets it
// buffers. A connection or clone is only made while its fixed state and
// base window fit both the total and the peer's shares; beyond the base
// window, a window is advertised in full but charged only as packets
// fill it (Conn.hold), so idle connections cost little and what peers
// can make the listener hold never exceeds the budget. When the budget
// has no room for a data packet the receiver drops it unacknowledged,
// as the network may: the sender retransmits it, and delivery stays
// whole and in order. Past the budget new connections are refused.
type budget struct {
	mu      sync.Mutex
	limit   int64
	share   int64 // per peer address
	pshare  int64 // per /24 or /48 prefix
	used    int64
	peak    int64
	refused uint64
	peers   map[netip.Addr]int64
	pfxs    map[netip.Prefix]int64
}

func newBudget(limit int64) *budget {
	// One prefix may take half: a host with many addresses (an IPv6
	// /64, a /24) cannot take all of it by using four.
	return &budget{limit: limit, share: max(limit/4, connCharge()), pshare: max(limit/2, connCharge()),
		peers: make(map[netip.Addr]int64), pfxs: make(map[netip.Prefix]int64)}
}

// connCharge is what a new connection takes from the budget: its fixed
// state and its base window.
func connCharge() int64 { return connBase + baseWindow*rxCost }

// take charges n bytes to peer; it reports false, charging nothing, when
// that would exceed the total, the peer's share or its prefix's. A nil budget takes
// everything.
func (b *budget) take(peer netip.Addr, n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	peer = pendingHost(peer) // an IPv6 /64 is one peer
	b.mu.Lock()
	defer b.mu.Unlock()
	pfx := pendingPrefix(peer)
	if b.used+n > b.limit || b.peers[peer]+n > b.share || b.pfxs[pfx]+n > b.pshare {
		b.refused++
		return false
	}
	b.used += n
	b.peers[peer] += n
	b.pfxs[pfx] += n
	b.peak = max(b.peak, b.used)
	return true
}

// takeUnits charges peer k units of unit bytes, k as large as fits the
// total and the peer's shares, at most most; it reports k, zero, charging
// nothing, when not even least units fit. A nil budget takes most.
func (b *budget) takeUnits(peer netip.Addr, unit int64, least, most int) int {
	if b == nil {
		return most
	}
	peer = pendingHost(peer)
	b.mu.Lock()
	defer b.mu.Unlock()
	pfx := pendingPrefix(peer)
	k := int(min(int64(most), (b.limit-b.used)/unit, (b.share-b.peers[peer])/unit, (b.pshare-b.pfxs[pfx])/unit))
	if k < least || k <= 0 {
		b.refused++
		return 0
	}
	n := int64(k) * unit
	b.used += n
	b.peers[peer] += n
	b.pfxs[pfx] += n
	b.peak = max(b.peak, b.used)
	return k
}

// give returns n bytes charged to peer.
func (b *budget) give(peer netip.Addr, n int64) {
	if b == nil || n <= 0 {
		return
	}
	peer = pendingHost(peer)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if v := b.peers[peer] - n; v > 0 {
		b.peers[peer] = v
	} else {
		delete(b.peers, peer)
	}
	pfx := pendingPrefix(peer)
	if v := b.pfxs[pfx] - n; v > 0 {
		b.pfxs[pfx] = v
	} else {
		delete(b.pfxs, pfx)
	}
}

// admit charges a new connection to the listener's budget. It reports
// false, and the connection is to be refused, when the budget or the
// peer's share is full. The charge also bounds the accept queue.
func (l *Listener) admit(c *Conn, peer netip.Addr) bool {
	n := connCharge()
	if !l.bud.take(peer, n) {
		return false
	}
	c.mu.Lock()
	c.bud, c.budPeer, c.charged, c.held = l.bud, peer, n, baseWindow
	c.mu.Unlock()
	return true
}

// roomFor reports whether a new connection from peer would fit the
// budget and its share, charging nothing: a handshake is charged (admit)
// only once its client confirms it.
func (l *Listener) roomFor(peer netip.Addr) bool {
	peer = pendingHost(peer)
	b := l.bud
	b.mu.Lock()
	defer b.mu.Unlock()
	n := connCharge()
	if b.used+n > b.limit || b.peers[peer]+n > b.share || b.pfxs[pendingPrefix(peer)]+n > b.pshare {
		b.refused++
		return false
	}
	return true
}

// charge takes n bytes from c's budget for c. Called with c.mu held.
func (c *Conn) charge(n int64) bool {
	if !c.bud.take(c.budPeer, n) {
		return false
	}
	c.charged += n
	return true
}

// uncharge returns everything charged to c. Called with c.mu held.
func (c *Conn) uncharge() {
	c.bud.give(c.budPeer, c.charged)
	c.charged, c.held, c.bigHeld = 0, 0, 0
}

// hold makes sure the budget holds room for n buffered packets of c's,
// in small buffers (a jumbo one costs more: holdJumbo), charging more
// (holdChunk ahead while the window allows) if need be; it reports false
// when the budget has no room. A connection without a budget (a
// dialer's) always has room: its window bounds it. Called with c.mu
// held.
func (c *Conn) hold(n int) bool {
	if c.bud == nil || n <= c.held {
		return true
	}
	least := n - c.held
	most := max(least, min(n+holdChunk, c.rcvCap+1)-c.held)
	k := c.bud.takeUnits(c.budPeer, rxCost, least, most)
	if k == 0 {
		if s := len(c.rxSpare); s > 0 {
			// Emptied buffers kept for reuse (recycleRx) give their
			// room to packets.
			c.putRxSpare()
			return c.hold(n - s)
		}
		return false
	}
	c.held += k
	c.charged += int64(k) * rxCost
	return true
}

// holdFor makes sure the budget holds room for c to buffer data packet
// seq, inside its window (hold). Called with c.mu held.
func (c *Conn) holdFor(seq uint64) bool {
	if c.bud == nil {
		return true
	}
	grow := max(int(seq-c.rcv.Expected())+1-c.rcv.Span(), 0)
	return c.hold(c.needed() + grow)
}

// needed is the room c's buffered packets take: those waiting to be read
// or reassembled, the receiver's span, whose gaps will fill, and the
// emptied buffers kept for the next ones (recycleRx). Called with c.mu
// held.
func (c *Conn) needed() int {
	n := c.readLen() + len(c.asm) + len(c.rxSpare)
	if c.rcv != nil {
		n += c.rcv.Span()
	}
	return n
}

// overHeld reports whether c holds much more room than it uses. Called
// with c.mu held.
func (c *Conn) overHeld() bool {
	return c.bud != nil && (c.held > max(baseWindow, c.needed())+holdChunk ||
		c.bigHeld > max(c.jumboBase(), c.rxBig)+jumboChunk)
}

// release gives back the room c holds beyond what it uses, down to its
// base window (and its jumbo base). Called with c.mu held.
func (c *Conn) release() {
	if c.bud == nil {
		return
	}
	if n := c.held - max(baseWindow, c.needed()); n > 0 {
		c.bud.give(c.budPeer, int64(n)*rxCost)
		c.held -= n
		c.charged -= int64(n) * rxCost
	}
	if n := c.bigHeld - max(c.jumboBase(), c.rxBig); n > 0 {
		c.bud.give(c.budPeer, int64(n)*jumboExtra)
		c.bigHeld -= n
		c.charged -= int64(n) * jumboExtra
	}
}

// BudgetStats describe a listener's memory budget.
type BudgetStats struct {
	// Budget is the total (Config.MemoryBudget) and PeerShare the part
	// one peer address may take.
	Budget, PeerShare int64
	// Committed is what the listener's connections and clones may hold
	// at most right now: fixed state and the room held for received
	// packets (base windows, and what windows filled since they were last
	// idle). It never exceeds Budget. Peak is its highest value.
	Committed, Peak int64
	// Buffered is the received data held now, in bytes of packet
	// buffers; it never exceeds the room counted in Committed.
	Buffered int64
	// Refused counts connections, clones and buffer room refused for
	// want of budget (each data packet so dropped counts too: see
	// Stats.BudgetDropped).
	Refused uint64
	// Conns counts the listener's connections and clones, Unaccepted
	// those waiting for Accept, UnacceptedForks the clones waiting for
	// AcceptFork.
	Conns, Unaccepted, UnacceptedForks int
}

// Stats reports the listener's memory accounting.
func (l *Listener) Stats() BudgetStats {
	b := l.bud
	b.mu.Lock()
	s := BudgetStats{Budget: b.limit, PeerShare: b.share, Committed: b.used, Peak: b.peak, Refused: b.refused}
	b.mu.Unlock()
	s.Unaccepted = l.accept.len()
	l.t.mu.Lock()
	conns := make([]*Conn, 0, len(l.t.conns))
	for _, c := range l.t.conns {
		conns = append(conns, c)
	}
	l.t.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		if c.bud == b {
			s.Conns++
			s.Buffered += c.bufferedBytes()
			s.UnacceptedForks += len(c.forks)
		}
		c.mu.Unlock()
	}
	return s
}

// bufferedBytes is what the received packets c holds take, as the
// budget counts them: the jumbo buffers among them at rxJumboCost, the
// others at rxCost. Called with c.mu held.
func (c *Conn) bufferedBytes() int64 {
	big := c.rxBig
	for _, b := range c.rxSpare {
		if isJumbo(b) {
			big-- // emptied: not received data
		}
	}
	return int64(c.buffered())*rxCost + int64(big)*jumboExtra
}

// buffered is the number of received packets c holds. Called with c.mu
// held.
func (c *Conn) buffered() int {
	n := c.readLen() + len(c.asm)
	if c.rcv != nil {
		n += c.rcv.Buffered()
	}
	return n
}
