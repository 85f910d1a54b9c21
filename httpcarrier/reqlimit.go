package httpcarrier

import (
	"net/http"
	"net/netip"
	"sync"

	"github.com/postsockets/postsockets/internal/hsrate"
)

// DefaultMaxRequestsPerAddr bounds the requests in progress from one
// client address at a front (RequestLimit), as cmd/psgateway applies it:
// a quarter of what a back serves at once on one root
// (Server.MaxConcurrentRequests, 256).
const DefaultMaxRequestsPerAddr = 64

// DefaultMaxRequestsPerPrefix bounds the requests in progress from one
// client prefix (an IPv4 /24, an IPv6 /48) at a front (RequestLimit):
// half of what a back serves at once on one root, so that one prefix
// holding all it may leaves 128 slots to everyone else.
const DefaultMaxRequestsPerPrefix = 128

// RequestLimit is an http.Handler for an ordinary http.Server in front of
// a Transport (a front gateway): one client address (an IPv6 /64) has at
// most PerAddr requests in progress and one prefix (an IPv4 /24, an IPv6
// /48) at most PerPrefix, CONNECT tunnels and upgraded connections
// included, HTTP/2 streams counted one by one. A back serves a root's
// requests 256 at a time and the front's clients share its roots: a
// request past them waits for a slot. Without the bounds one address (or
// a few of one prefix) holding requests open (heads sent, bodies or reads
// held back) took every slot and the front answered no one else. With
// PerPrefix below the back's 256, a client of another prefix is served
// while one prefix holds all it may. A request over a bound gets 503
// with Retry-After at once and takes no fork. A zero field applies its
// default (DefaultMaxRequestsPerAddr, DefaultMaxRequestsPerPrefix); a
// negative one no bound.
type RequestLimit struct {
	Handler   http.Handler
	PerAddr   int
	PerPrefix int

	mu     sync.Mutex
	open   map[netip.Addr]int
	prefix map[netip.Prefix]int
}

func (h *RequestLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	perAddr, perPrefix := h.PerAddr, h.PerPrefix
	if perAddr == 0 {
		perAddr = DefaultMaxRequestsPerAddr
	}
	if perPrefix == 0 {
		perPrefix = DefaultMaxRequestsPerPrefix
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if (perAddr < 0 && perPrefix < 0) || err != nil {
		h.Handler.ServeHTTP(w, r)
		return
	}
	a := hsrate.Host(ap.Addr().Unmap())
	p := hsrate.Prefix(a)
	h.mu.Lock()
	if perAddr >= 0 && h.open[a] >= perAddr {
		h.mu.Unlock()
		tooMany(w, "too many requests in progress from this address")
		return
	}
	if perPrefix >= 0 && h.prefix[p] >= perPrefix {
		h.mu.Unlock()
		tooMany(w, "too many requests in progress from this network")
		return
	}
	if h.open == nil {
		h.open = make(map[netip.Addr]int)
		h.prefix = make(map[netip.Prefix]int)
	}
	h.open[a]++
	h.prefix[p]++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.open[a]--; h.open[a] == 0 {
			delete(h.open, a)
		}
		if h.prefix[p]--; h.prefix[p] == 0 {
			delete(h.prefix, p)
		}
		h.mu.Unlock()
	}()
	h.Handler.ServeHTTP(w, r)
}

// tooMany answers 503 with Retry-After.
func tooMany(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, msg, http.StatusServiceUnavailable)
}
