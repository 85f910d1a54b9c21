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

// RequestLimit is an http.Handler for an ordinary http.Server in front of
// a Transport (a front gateway): one client address (an IPv6 /64) has at
// most PerAddr requests in progress, CONNECT tunnels and upgraded
// connections included, HTTP/2 streams counted one by one. A back
// serves a root's requests 256 at a time and the front's clients share
// its roots, so without it one address holding requests open (heads
// sent, bodies or reads held back; 256 HTTP/1.1 connections, or one
// HTTP/2 connection's 250 streams and a few more) took every slot and
// the front answered no one else. A request over the limit gets 503
// with Retry-After at once and takes no fork. A zero RequestLimit
// applies DefaultMaxRequestsPerAddr; a negative PerAddr none.
type RequestLimit struct {
	Handler http.Handler
	PerAddr int

	mu   sync.Mutex
	open map[netip.Addr]int
}

func (h *RequestLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	limit := h.PerAddr
	if limit == 0 {
		limit = DefaultMaxRequestsPerAddr
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if limit < 0 || err != nil {
		h.Handler.ServeHTTP(w, r)
		return
	}
	a := hsrate.Host(ap.Addr().Unmap())
	h.mu.Lock()
	if h.open[a] >= limit {
		h.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many requests in progress from this address", http.StatusServiceUnavailable)
		return
	}
	if h.open == nil {
		h.open = make(map[netip.Addr]int)
	}
	h.open[a]++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.open[a]--; h.open[a] == 0 {
			delete(h.open, a)
		}
		h.mu.Unlock()
	}()
	h.Handler.ServeHTTP(w, r)
}
