package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
)

// defaultConnsPerAddr is -max-conns-per-addr's default: enough for the
// users behind one NAT, far below a process's descriptors.
const defaultConnsPerAddr = 256

// defaultConns is -max-conns's default: the front's open connections in
// all, below the descriptors a process usually may hold.
const defaultConns = 4096

// defaultTunnelIdle is -tunnel-idle-timeout's default: the tunnel
// counterpart of the front's 2-minute keep-alive idle timeout, longer
// since a tunnel's protocol may be quiet for a while (a held-open TLS
// session), short enough that idle tunnels do not pile up.
const defaultTunnelIdle = 10 * time.Minute

// evictAfter protects a connection that has not sent its first request
// yet from eviction for a while: its client is likely sending it.
const evictAfter = time.Second

// connLimiter wraps the front's listener so that one client address
// holds at most perAddr open connections and all of them at most total
// (CONNECT tunnels included): addresses opening keep-alive connections
// and idling must not use up the process's descriptors and lock everyone
// out. An IPv6 /64 counts as one address. Past the per-address limit a connection is closed as soon as it
// is accepted. Past the total, a newcomer whose address holds fewer
// connections than another takes the place of one of its connections
// that is idle between requests, or has sent no request for evictAfter:
// the busiest address's first, oldest first. A client may lose an idle
// keep-alive connection at any time (it opens another); a request in
// progress or a tunnel is never cut. If there is none the newcomer is
// closed. Refusing costs neither a goroutine nor memory:
// the accept loop closes the socket. A limit <= 0 means none.
type connLimiter struct {
	net.Listener
	perAddr, total int
	mu             sync.Mutex
	open           map[netip.Addr]int
	conns          map[*addrConn]struct{} // when total > 0
}

// limitConns wraps ln; see connLimiter.
func limitConns(ln net.Listener, perAddr, total int) *connLimiter {
	return &connLimiter{Listener: ln, perAddr: perAddr, total: total,
		open: make(map[netip.Addr]int), conns: make(map[*addrConn]struct{})}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var a netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			a = hsrate.Host(ta.AddrPort().Addr()) // an IPv6 /64 is one client
		}
		if ac := l.admit(c, a); ac != nil {
			return ac, nil
		}
		c.Close()
	}
}

// admit counts c in, evicting a connection of the busiest address if
// the front is full, or returns nil.
func (l *connLimiter) admit(c net.Conn, a netip.Addr) *addrConn {
	for range 4 { // an evicted connection may have been closed meanwhile
		l.mu.Lock()
		if l.perAddr > 0 && l.open[a] >= l.perAddr {
			l.mu.Unlock()
			return nil
		}
		if l.total <= 0 || len(l.conns) < l.total {
			l.open[a]++
			ac := &addrConn{Conn: c, l: l, a: a, since: time.Now()}
			l.conns[ac] = struct{}{}
			l.mu.Unlock()
			return ac
		}
		victim := l.victim(a)
		l.mu.Unlock()
		if victim == nil {
			return nil
		}
		victim.Close()
	}
	return nil
}

// victim returns the connection to close for a newcomer from a, or nil.
// Called with l.mu held.
func (l *connLimiter) victim(a netip.Addr) *addrConn {
	now := time.Now()
	var best *addrConn
	for c := range l.conns {
		if !c.evictable(now) || l.open[c.a] <= l.open[a] {
			continue
		}
		if best == nil || l.open[c.a] > l.open[best.a] || l.open[c.a] == l.open[best.a] && c.since.Before(best.since) {
			best = c
		}
	}
	return best
}

// connState follows the front's connections (http.Server.ConnState):
// which are idle between requests and may be evicted.
func (l *connLimiter) connState(c net.Conn, s http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	ac, ok := c.(*addrConn)
	if !ok {
		return
	}
	l.mu.Lock()
	ac.state, ac.since = s, time.Now()
	l.mu.Unlock()
}

// addrConn gives its slots back when closed.
type addrConn struct {
	net.Conn
	l     *connLimiter
	a     netip.Addr
	state http.ConnState // guarded by l.mu, as since
	since time.Time      // when it entered state
	once  sync.Once
}

// evictable reports whether c may make room for a newcomer: idle between
// requests, or silent since it connected. Called with l.mu held.
func (c *addrConn) evictable(now time.Time) bool {
	return c.state == http.StateIdle || c.state == http.StateNew && now.Sub(c.since) >= evictAfter
}

func (c *addrConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.open[c.a]--; c.l.open[c.a] <= 0 {
			delete(c.l.open, c.a)
		}
		delete(c.l.conns, c)
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
