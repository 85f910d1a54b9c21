package tcp

import (
	"net/netip"
	"sync"

	"github.com/postsockets/postsockets/internal/hsrate"
)

// connCount counts the live server transients, roots and forks, of each
// source (hsrate.Host: an IPv4 address or an IPv6 /64), so one source
// cannot hold unbounded state once it has passed the handshake. Sources
// at zero are dropped: the map holds only sources with live transients.
type connCount struct {
	max   int
	mu    sync.Mutex
	addrs map[netip.Addr]int
}

func newConnCount(n int) *connCount {
	return &connCount{max: n, addrs: make(map[netip.Addr]int)}
}

// acquire counts a transient from addr and returns the func that uncounts
// it, which does so once however often it is called; nil means addr
// holds its quota already.
func (c *connCount) acquire(addr netip.Addr) func() {
	addr = hsrate.Host(addr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[addr] >= c.max {
		return nil
	}
	c.addrs[addr]++
	return sync.OnceFunc(func() { c.release(addr) })
}

func (c *connCount) release(addr netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[addr]--; c.addrs[addr] <= 0 {
		delete(c.addrs, addr)
	}
}

// of returns the transients counted for addr's source.
func (c *connCount) of(addr netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[hsrate.Host(addr)]
}

// sources returns the number of sources with live transients.
func (c *connCount) sources() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.addrs)
}
