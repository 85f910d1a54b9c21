package main

import (
	"net"
	"net/netip"
	"sync"
)

// limitPerSource wraps ln so that each client address holds at most max
// open connections; further ones are closed as soon as they are accepted.
// max <= 0 means no limit.
func limitPerSource(ln net.Listener, max int) net.Listener {
	if max <= 0 {
		return ln
	}
	return &sourceLimiter{Listener: ln, max: max, open: make(map[netip.Addr]int)}
}

type sourceLimiter struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open map[netip.Addr]int
}

func (l *sourceLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var addr netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			addr = ta.AddrPort().Addr().Unmap()
		}
		l.mu.Lock()
		if l.open[addr] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[addr]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, addr: addr}, nil
	}
}

func (l *sourceLimiter) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[addr]--; l.open[addr] <= 0 {
		delete(l.open, addr)
	}
}

// limitedConn gives its slot back when closed.
type limitedConn struct {
	net.Conn
	l    *sourceLimiter
	addr netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c.addr) })
	return c.Conn.Close()
}
