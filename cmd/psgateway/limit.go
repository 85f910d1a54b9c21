package main

import (
	"net"
	"net/netip"
	"sync"
)

// defaultConnsPerAddr is -max-conns-per-addr's default: enough for the
// users behind one NAT, far below a process's descriptors.
const defaultConnsPerAddr = 256

// limitPerAddr wraps the front's listener so that one client address
// holds at most max open connections (CONNECT tunnels included): one
// address opening keep-alive connections and idling must not use up the
// process's descriptors and lock everyone out. Connections past the
// limit are closed as soon as they are accepted. max <= 0 means none.
func limitPerAddr(ln net.Listener, max int) net.Listener {
	if max <= 0 {
		return ln
	}
	return &addrLimiter{Listener: ln, max: max, open: make(map[netip.Addr]int)}
}

type addrLimiter struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open map[netip.Addr]int
}

func (l *addrLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var a netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			a = ta.AddrPort().Addr().Unmap()
		}
		l.mu.Lock()
		if l.open[a] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[a]++
		l.mu.Unlock()
		return &addrConn{Conn: c, l: l, a: a}, nil
	}
}

// addrConn gives its address's slot back when closed.
type addrConn struct {
	net.Conn
	l    *addrLimiter
	a    netip.Addr
	once sync.Once
}

func (c *addrConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.open[c.a]--; c.l.open[c.a] <= 0 {
			delete(c.l.open, c.a)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection (a CONNECT tunnel passes a
// client's end of stream on with it).
func (c *addrConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
