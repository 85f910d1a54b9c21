package psitest

import (
	"net"
	"sync/atomic"
)

// VanishingConn wraps a net.PacketConn so that a test can make its end
// vanish: after Vanish, every datagram is dropped both ways without an
// error, as when a host loses power or a network path breaks.
type VanishingConn struct {
	net.PacketConn
	gone atomic.Bool
}

// NewVanishingConn wraps pc.
func NewVanishingConn(pc net.PacketConn) *VanishingConn {
	return &VanishingConn{PacketConn: pc}
}

// Vanish drops every datagram from now on.
func (c *VanishingConn) Vanish() { c.gone.Store(true) }

// ReadFrom discards what arrives after Vanish.
func (c *VanishingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.gone.Load() {
			return n, addr, err
		}
	}
}

// WriteTo pretends to send after Vanish.
func (c *VanishingConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.gone.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}
