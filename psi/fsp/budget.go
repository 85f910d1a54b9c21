package fsp

import (
	"net/netip"
	"sync"
)

// Memory costs the budget counts, in bytes.
const (
	// bufCost is one buffered packet: a pooled datagram buffer and its
	// bookkeeping.
	bufCost = MaxDatagramSize + 64
	// connBase is a connection's fixed state: the Conn, its sender,
	// receiver, timers and path table.
	connBase = 16 << 10
	// initialWindow is the receive window a connection starts with, in
	// packets (about 135 KiB), and cloneWindow that of a clone (about
	// 22 KiB); they grow with the bandwidth-delay product.
	initialWindow = 96
	cloneWindow   = 16
	// cloneCost is what the budget reserves for each clone the peer may
	// fork: its fixed state and initial window.
	cloneCost = connBase + cloneWindow*bufCost
)

// budget is the memory a listener commits to its peers: for every
// connection and clone its fixed state, its receive window (the most it
// buffers) and the clones its peer may still fork from it. A connection
// or clone is only made, and a window or a fork credit only grows, while
// the charge fits both the total and the peer's share, so what peers can
// make the listener hold never exceeds the budget. Data inside a window
// already advertised is never dropped: past the budget windows and fork
// credit stop growing (back-pressure) and new connections are refused.
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
// state, its initial window and the clones its peer may fork before
// hearing from it.
func connCharge() int64 {
	return connBase + initialWindow*bufCost + initialForkCredit*cloneCost
}

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
	c.bud, c.budPeer, c.charged = l.bud, peer, n
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

// reserveClone charges the budget for one more clone the peer may fork.
// Called with c.mu held.
func (c *Conn) reserveClone() bool { return c.charge(cloneCost) }

// uncharge returns everything charged to c. Called with c.mu held.
func (c *Conn) uncharge() {
	c.bud.give(c.budPeer, c.charged)
	c.charged = 0
}

// BudgetStats describe a listener's memory budget.
type BudgetStats struct {
	// Budget is the total (Config.MemoryBudget) and PeerShare the part
	// one peer address may take.
	Budget, PeerShare int64
	// Committed is what the listener's connections and clones may hold
	// at most right now: fixed state, receive windows and reserved fork
	// credit. It never exceeds Budget. Peak is its highest value.
	Committed, Peak int64
	// Buffered is the received data held now, in bytes of packet
	// buffers; it never exceeds the windows counted in Committed.
	Buffered int64
	// Refused counts connections, clones and window growth refused for
	// want of budget.
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
			s.Buffered += int64(c.buffered()) * bufCost
			s.UnacceptedForks += len(c.forks)
		}
		c.mu.Unlock()
	}
	return s
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
