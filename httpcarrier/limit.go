package httpcarrier

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/post"
)

// Default bounds of a front's ordinary HTTP listener (LimitListener), as
// cmd/psgateway applies them.
const (
	// DefaultMaxConns bounds the open connections in all: below the
	// descriptors a process usually may hold.
	DefaultMaxConns = 4096
	// DefaultMaxConnsPerAddr bounds those of one client address: enough
	// for the users behind one NAT, far below a process's descriptors.
	DefaultMaxConnsPerAddr = 256
	// DefaultFrontHeaderBytes bounds a client's request head (or HTTP/2
	// header list; http.Server.MaxHeaderBytes). A head is held whole
	// until it ends, for up to the front's 30 s ReadHeaderTimeout, so
	// net/http's 1 MiB let one address hold 256 MiB (DefaultMaxConnsPerAddr
	// connections) and a full front 4 GiB before any request. 64 KiB is
	// twice what nginx takes by default, room for large cookies.
	DefaultFrontHeaderBytes = 64 << 10
)

// evictAfter protects a connection that has not sent its first request
// yet from eviction for a while: its client is likely sending it.
const evictAfter = time.Second

// ConnLimiter is a net.Listener for an ordinary http.Server in front of
// a Transport (a front gateway): one client address holds at most
// perAddr open connections and all of them at most total, hijacked ones
// (CONNECT, Upgrade) included, so that addresses opening keep-alive
// connections and idling cannot use up the process's descriptors and
// lock everyone out. An IPv6 /64 counts as one address.
//
// Past the per-address limit a connection is closed as soon as it is
// accepted. Past the total, a newcomer whose address holds fewer
// connections than another takes the place of one of that address's
// connections that is idle between requests, or has not completed a
// request head for a second (net/http reports a connection active only
// once it has): the busiest address's first, oldest first. A client may
// lose an idle keep-alive connection at any time (it opens another); a
// request in progress or a hijacked connection is never cut. If there is
// none the newcomer is closed. Refusing costs neither a goroutine nor
// memory: the accept loop closes the socket. A limit <= 0 means none.
//
// Evicting needs the connections' states: set http.Server.ConnState to
// ConnState. Until it reports one, the limiter evicts nothing and closes
// every newcomer past the total.
type ConnLimiter struct {
	net.Listener
	perAddr, total int
	mu             sync.Mutex
	open           map[netip.Addr]int
	conns          map[*limitedConn]struct{}
	// cands counts the conns that are new or idle, the only ones that
	// may become victims: with none, a full listener refuses a newcomer
	// without looking through every connection.
	cands int
	// tracked: ConnState was called, so states are known.
	tracked bool
	// holding[k] is the number of addresses holding k connections, and
	// most the largest such k: a newcomer from an address holding that
	// many has no victim, found without looking.
	holding map[int]int
	most    int
}

// LimitListener wraps ln; see ConnLimiter.
func LimitListener(ln net.Listener, perAddr, total int) *ConnLimiter {
	return &ConnLimiter{Listener: ln, perAddr: perAddr, total: total,
		open: make(map[netip.Addr]int), conns: make(map[*limitedConn]struct{}), holding: make(map[int]int)}
}

// count adds d (1 or -1) to the connections a holds. Called with l.mu
// held.
func (l *ConnLimiter) count(a netip.Addr, d int) {
	k := l.open[a]
	if k > 0 {
		if l.holding[k]--; l.holding[k] == 0 {
			delete(l.holding, k)
			if k == l.most && d < 0 {
				l.most--
			}
		}
	}
	k += d
	if k <= 0 {
		delete(l.open, a)
		return
	}
	l.open[a] = k
	l.holding[k]++
	l.most = max(l.most, k)
}

// Accept returns the next connection within the limits, closing those
// over them.
func (l *ConnLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var a netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			a = hsrate.Host(ta.AddrPort().Addr()) // an IPv6 /64 is one client
		}
		if lc := l.admit(c, a); lc != nil {
			return lc, nil
		}
		c.Close()
	}
}

// Open returns the connections counted in.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// admit counts c in, evicting a connection of the busiest address if
// the listener is full, or returns nil.
func (l *ConnLimiter) admit(c net.Conn, a netip.Addr) *limitedConn {
	for range 4 { // an evicted connection may have been closed meanwhile
		l.mu.Lock()
		if l.perAddr > 0 && l.open[a] >= l.perAddr {
			l.mu.Unlock()
			return nil
		}
		if l.total <= 0 || len(l.conns) < l.total {
			l.count(a, 1)
			lc := &limitedConn{Conn: c, l: l, a: a, since: time.Now()} // StateNew
			l.conns[lc] = struct{}{}
			l.cands++
			l.mu.Unlock()
			return lc
		}
		victim := l.victimLocked(a)
		l.mu.Unlock()
		if victim == nil {
			return nil
		}
		victim.Close()
	}
	return nil
}

// victimLocked returns the connection to close for a newcomer from a,
// or nil. Called with l.mu held.
func (l *ConnLimiter) victimLocked(a netip.Addr) *limitedConn {
	if l.cands == 0 || !l.tracked || l.open[a] >= l.most {
		// Every connection serves a request or is hijacked, no state is
		// known, or no address holds more than a.
		return nil
	}
	now := time.Now()
	var best *limitedConn
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

// ConnState follows the server's connections (set it as
// http.Server.ConnState): which are idle between requests and may be
// evicted.
func (l *ConnLimiter) ConnState(c net.Conn, s http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	if !ok || lc.l != l {
		return
	}
	l.mu.Lock()
	l.tracked = true
	if _, ok := l.conns[lc]; ok {
		l.cands += candidate(s) - candidate(lc.state)
	}
	lc.state, lc.since = s, time.Now()
	l.mu.Unlock()
}

// candidate is 1 for the states in which a connection may be evicted
// (once old enough), else 0.
func candidate(s http.ConnState) int {
	if s == http.StateNew || s == http.StateIdle {
		return 1
	}
	return 0
}

// limitedConn gives its place back when closed.
type limitedConn struct {
	net.Conn
	l     *ConnLimiter
	a     netip.Addr
	state http.ConnState // guarded by l.mu, as since
	since time.Time      // when it entered state
	once  sync.Once
}

// evictable reports whether c may make room for a newcomer: idle between
// requests, or silent since it connected. Called with l.mu held.
func (c *limitedConn) evictable(now time.Time) bool {
	return c.state == http.StateIdle || c.state == http.StateNew && now.Sub(c.since) >= evictAfter
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.count(c.a, -1)
		delete(c.l.conns, c)
		c.l.cands -= candidate(c.state)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection (a CONNECT tunnel passes a
// client's end of stream on with it).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return post.Errorf(post.ErrNotSupported, "httpcarrier: %T cannot half-close", c.Conn)
}
