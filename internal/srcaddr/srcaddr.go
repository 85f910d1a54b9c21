// Package srcaddr finds the local address a socket bound to the
// unspecified address (0.0.0.0, ::) sends from to a given peer.
package srcaddr

import (
	"net"
	"net/netip"
	"sync"
)

// For returns local, or, when local's address is unspecified, the address
// the system picks to send to remote, with local's port. A UDP socket
// connected to remote learns it from the routing table without sending
// anything. Where the system cannot tell (no route), local is returned.
func For(local, remote netip.AddrPort) netip.AddrPort {
	if !remote.IsValid() || !local.IsValid() || !local.Addr().IsUnspecified() {
		return local
	}
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(remote))
	if err != nil {
		return local
	}
	defer uc.Close()
	a := uc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	return netip.AddrPortFrom(a, local.Port())
}

// Cache remembers For's answer for the last remote asked about, so that a
// path reported often costs one lookup until the peer's address changes.
// The zero value is ready to use.
type Cache struct {
	mu             sync.Mutex
	remote, answer netip.AddrPort
	local          netip.AddrPort
}

// For is For, from the cache when local and remote are those of the
// last call.
func (c *Cache) For(local, remote netip.AddrPort) netip.AddrPort {
	if !remote.IsValid() || !local.IsValid() || !local.Addr().IsUnspecified() {
		return local
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.remote != remote || c.local != local {
		c.remote, c.local, c.answer = remote, local, For(local, remote)
	}
	return c.answer
}
