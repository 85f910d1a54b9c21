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
	// With a total (WithTotal): the connections in all, and by Prefix.
	total, perPrefix, n int
	prefixes            map[netip.Prefix]int
}

// NewConns returns a count that admits at most max connections a source.
func NewConns(max int) *Conns {
	return &Conns{max: max, addrs: make(map[netip.Addr]int)}
}

// WithTotal also bounds the connections in all to total, and those of
// one prefix (Prefix: an IPv4 /24, an IPv6 /48) to a quarter of it, as
// the FSP listener's budget shares its room, or to a source's bound if
// that is more (up to total): one source alone still reaches its bound.
// It returns c; call it before the first Acquire.
func (c *Conns) WithTotal(total int) *Conns {
	c.total, c.perPrefix = total, max(total/4, min(c.max, total), 1)
	c.prefixes = make(map[netip.Prefix]int)
	return c
}

// Max returns the bound.
func (c *Conns) Max() int { return c.max }

// Acquire counts a connection from addr and returns the func that
// uncounts it, which does so once however often it is called; nil means
// addr's source holds its bound already.
func (c *Conns) Acquire(addr netip.Addr) func() {
	addr = Host(addr)
	pfx := Prefix(addr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[addr] >= c.max {
		return nil
	}
	if c.total > 0 {
		if c.n >= c.total || c.prefixes[pfx] >= c.perPrefix {
			return nil
		}
		c.n++
		c.prefixes[pfx]++
	}
	c.addrs[addr]++
	return sync.OnceFunc(func() { c.release(addr, pfx) })
}

func (c *Conns) release(addr netip.Addr, pfx netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[addr]--; c.addrs[addr] <= 0 {
		delete(c.addrs, addr)
	}
	if c.total > 0 {
		c.n--
		if c.prefixes[pfx]--; c.prefixes[pfx] <= 0 {
			delete(c.prefixes, pfx)
		}
	}
}

// Total returns the connections counted in all, with WithTotal.
func (c *Conns) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
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
