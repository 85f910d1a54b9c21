package quic

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/post"
)

// rateAbove is the number of handshakes in progress past which a
// listener refuses a proven client over its handshake rate. Below it a
// client that dials one handshake after another is not limited, since
// QUIC, unlike FSP, cannot drop it silently for a retransmission.
const rateAbove = 8

// handshakes bounds a listener's handshakes in progress, in total and per
// source address and /24 or /48 prefix, through quic-go's
// Transport.ConnContext; and makes every client without a token prove its
// address with a Retry (RFC 9000 §8.1.2) through
// Transport.VerifySourceAddress, so that no reply to an unproven Initial
// is larger than it and nothing is kept for it. A handshake counts from the
// client's first Initial until it completes or the connection ends.
// When all max are in progress, a newcomer whose prefix holds fewer than
// the busiest prefix ends the oldest handshake of that prefix that has
// been in progress for evictAge (as the TCP and FSP listeners make room
// from the largest holder), so clients that passed the Retry and never
// finish, from a few prefixes, cannot lock everyone else out.
type handshakes struct {
	max, perAddr, perPrefix int

	mu    sync.Mutex
	total int
	addrs map[netip.Addr]int
	pfxs  map[netip.Prefix]int
	live  map[*handshake]struct{}
	// The handshake rate (internal/hsrate): rate a second per prefix,
	// charged, once rateAbove are in progress, to a client whose address
	// a token proved (which, over it, is refused).
	rate   int
	proven hsrate.Limiter
	// conns bounds each source's live connections, handshakes included.
	conns *hsrate.Conns
	// closed: the listener is closed, its socket still open for the
	// connections it accepted; every new one is refused.
	closed atomic.Bool
}

// evictAge protects a fresh handshake from eviction: its client, if
// honest, finishes within a round trip or two.
const evictAge = 500 * time.Millisecond

func newHandshakes(max, perAddr, connsPerSource int) *handshakes {
	return &handshakes{max: max, perAddr: perAddr, perPrefix: min(4*perAddr, max),
		addrs: make(map[netip.Addr]int), pfxs: make(map[netip.Prefix]int), live: make(map[*handshake]struct{}),
		conns: hsrate.NewConns(connsPerSource)}
}

// install sets t's callbacks; t must not be in use yet. A connection it
// refuses gives its account back to rb, if not nil.
func (h *handshakes) install(t *quicgo.Transport, rb *budget) {
	t.VerifySourceAddress = h.verify
	t.ConnContext = h.connContext
	if rb != nil {
		t.ConnContext = func(ctx context.Context, ci *quicgo.ClientInfo) (context.Context, error) {
			ctx, err := h.connContext(ctx, ci)
			if err != nil {
				rb.dropPending()
			}
			return ctx, err
		}
	}
}

// verify asks for a Retry from every Initial that carries no valid token.
// A client that connected before holds a token from NEW_TOKEN (the stack
// keeps them, see Stack.tokenStore) and skips the round trip.
func (h *handshakes) verify(net.Addr) bool { return true }

type handshakeKey struct{}

// handshake is one admitted handshake.
type handshake struct {
	h    *handshakes
	addr netip.Addr
	pfx  netip.Prefix
	at   time.Time
	// Guarded by h.mu: the connection once accepted (early), which
	// eviction closes, and whether the counts were given back.
	qc       *quicgo.Conn
	released bool
}

func (h *handshakes) connContext(ctx context.Context, ci *quicgo.ClientInfo) (context.Context, error) {
	if h.closed.Load() {
		return ctx, post.Errorf(post.ErrClosed, "quic: listener closed")
	}
	var addr netip.Addr
	if ua, ok := ci.RemoteAddr.(*net.UDPAddr); ok {
		addr = ua.AddrPort().Addr().Unmap()
	}
	pfx := hsrate.Prefix(addr)
	from := addr
	addr = hsrate.Host(addr)
	release := h.conns.Acquire(addr)
	if release == nil {
		return ctx, post.Errorf(post.ErrBackpressure, "quic: %v holds its %d connections", from, h.conns.Max())
	}
	admitted := false
	defer func() {
		if !admitted {
			release()
		}
	}()
	now := time.Now()
	h.mu.Lock()
	if h.proven.Owes(from, now, h.rate) {
		h.mu.Unlock()
		return ctx, post.Errorf(post.ErrRefused, "quic: %v held off: a connection of its was closed for abuse", from)
	}
	if ci.AddrVerified && h.total >= rateAbove && !h.proven.Allow(from, now, h.rate) {
		h.mu.Unlock()
		return ctx, post.Errorf(post.ErrRefused, "quic: handshakes from %v over the rate", from)
	}
	var victim *handshake
	if h.total >= h.max && h.addrs[addr] < h.perAddr && h.pfxs[pfx] < h.perPrefix {
		victim = h.victimLocked(pfx, now)
	}
	if victim != nil {
		h.releaseLocked(victim)
	}
	if h.total >= h.max || h.addrs[addr] >= h.perAddr || h.pfxs[pfx] >= h.perPrefix {
		h.mu.Unlock()
		return ctx, post.Errorf(post.ErrRefused, "quic: too many handshakes from %v", from)
	}
	h.total++
	h.addrs[addr]++
	h.pfxs[pfx]++
	hs := &handshake{h: h, addr: addr, pfx: pfx, at: now}
	h.live[hs] = struct{}{}
	h.mu.Unlock()
	if victim != nil {
		// Not here: CloseWithError waits for the connection's loop.
		go victim.qc.CloseWithError(codeRefused, "handshake evicted")
	}
	context.AfterFunc(ctx, hs.done)
	admitted = true
	context.AfterFunc(ctx, release)
	return withHooks(context.WithValue(ctx, handshakeKey{}, hs)), nil
}

// abusePenalty is what a connection closed for abuse costs its source:
// that long of its own handshakes (hsrate.Limiter.Charge), during which
// it is refused. An attacker that dials again as each of its
// connections is closed gets one a penalty, and with it a fresh window
// to fill, rather than one as fast as the listener closes them.
const abusePenalty = 4 * time.Second

// abused charges src, whose connection was closed for abuse.
func (h *handshakes) abused(src netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.proven.Charge(src, time.Now(), h.rate, abusePenalty)
}

// victimLocked returns the handshake to end for a newcomer from pfx: the
// oldest, accepted and older than evictAge, of the prefix holding the
// most, if that holds more than pfx; or nil. Called with h.mu held.
func (h *handshakes) victimLocked(pfx netip.Prefix, now time.Time) *handshake {
	var best *handshake
	for hs := range h.live {
		if hs.qc == nil || now.Sub(hs.at) < evictAge || h.pfxs[hs.pfx] <= h.pfxs[pfx] {
			continue
		}
		if best == nil || h.pfxs[hs.pfx] > h.pfxs[best.pfx] || h.pfxs[hs.pfx] == h.pfxs[best.pfx] && hs.at.Before(best.at) {
			best = hs
		}
	}
	return best
}

// accepted records qc, accepted early, as its handshake's connection.
func (h *handshakes) accepted(qc *quicgo.Conn) {
	if hs, ok := qc.Context().Value(handshakeKey{}).(*handshake); ok && hs.h == h {
		h.mu.Lock()
		hs.qc = qc
		h.mu.Unlock()
	}
}

func (hs *handshake) done() {
	hs.h.mu.Lock()
	defer hs.h.mu.Unlock()
	hs.h.releaseLocked(hs)
}

// releaseLocked gives hs's counts back, once. Called with h.mu held.
func (h *handshakes) releaseLocked(hs *handshake) {
	if hs.released {
		return
	}
	hs.released = true
	delete(h.live, hs)
	h.total--
	if h.addrs[hs.addr]--; h.addrs[hs.addr] == 0 {
		delete(h.addrs, hs.addr)
	}
	if h.pfxs[hs.pfx]--; h.pfxs[hs.pfx] == 0 {
		delete(h.pfxs, hs.pfx)
	}
}

// handshakeDone releases qc's handshake once it completed.
func handshakeDone(qc *quicgo.Conn) {
	if hs, ok := qc.Context().Value(handshakeKey{}).(*handshake); ok {
		hs.done()
	}
}

// inProgress returns the handshakes counted.
func (h *handshakes) inProgress() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}
