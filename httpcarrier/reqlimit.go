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
// (DefaultMaxConcurrentRequests, 256).
const DefaultMaxRequestsPerAddr = 64

// DefaultMaxRequestsPerPrefix bounds the requests in progress from one
// client prefix (an IPv4 /24, an IPv6 /48) at a front (RequestLimit),
// waiting ones included: half of what a back serves at once on one root,
// as many as the Transport lets a prefix alone hold there.
const DefaultMaxRequestsPerPrefix = 128

// RequestLimit is an http.Handler for an ordinary http.Server in front of
// a Transport (a front gateway): one client address (an IPv6 /64) has at
// most PerAddr requests in progress and one prefix (an IPv4 /24, an IPv6
// /48) at most PerPrefix, CONNECT tunnels and upgraded connections
// included, HTTP/2 streams counted one by one. A request over a bound
// gets 503 with Retry-After at once and takes no fork. A zero field
// applies its default (DefaultMaxRequestsPerAddr,
// DefaultMaxRequestsPerPrefix); a negative one no bound.
//
// It also marks each request's context with its client (WithClient), so
// that the Transport shares the back's slots (256 requests at once a
// root) fairly between prefixes: a prefix that holds many waits while
// others are served (Transport.MaxConcurrentRequests). The bounds here
// keep what one address or prefix has waiting at the front small.
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
	if err != nil {
		h.Handler.ServeHTTP(w, r)
		return
	}
	a := hsrate.Host(ap.Addr().Unmap())
	r = r.WithContext(WithClient(r.Context(), a))
	if perAddr < 0 && perPrefix < 0 {
		h.Handler.ServeHTTP(w, r)
		return
	}
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
