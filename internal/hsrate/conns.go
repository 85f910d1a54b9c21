package hsrate

import (
	"net/netip"
	"sync"
)

// Conns counts the live connections of each source (Host: an IPv4
// address or an IPv6 /64) on a listener, up to a bound, so one source
// cannot hold unbounded state once it has passed the handshake. Sources
// at zero are dropped: the map holds only sources with live connections.
type Conns struct {
	max   int
	mu    sync.Mutex
	addrs map[netip.Addr]int
}

// NewConns returns a count that admits at most max connections a source.
func NewConns(max int) *Conns {
	return &Conns{max: max, addrs: make(map[netip.Addr]int)}
}

// Max returns the bound.
func (c *Conns) Max() int { return c.max }

// Acquire counts a connection from addr and returns the func that
// uncounts it, which does so once however often it is called; nil means
// addr's source holds its bound already.
func (c *Conns) Acquire(addr netip.Addr) func() {
	addr = Host(addr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[addr] >= c.max {
		return nil
	}
	c.addrs[addr]++
	return sync.OnceFunc(func() { c.release(addr) })
}

func (c *Conns) release(addr netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[addr]--; c.addrs[addr] <= 0 {
		delete(c.addrs, addr)
	}
}

// Of returns the connections counted for addr's source.
func (c *Conns) Of(addr netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[Host(addr)]
}

// Sources returns the number of sources with live connections.
func (c *Conns) Sources() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.addrs)
}
