package quic

import (
	"context"
	"net"
	"net/netip"
	"sync"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/post"
)

// retryAbove is the number of handshakes in progress past which a
// listener asks new clients to prove their address with a Retry (RFC 9000
// §8.1.2) before it keeps any state or sends more than the Retry: under
// load, no reply to a spoofed Initial is larger than it.
const retryAbove = 8

// handshakes bounds a listener's handshakes in progress, in total and per
// source address and /24 or /48 prefix, through quic-go's
// Transport.ConnContext; and turns on address validation under load
// through Transport.VerifySourceAddress. A handshake counts from the
// client's first Initial until it completes or the connection ends.
type handshakes struct {
	max, perAddr, perPrefix int

	mu    sync.Mutex
	total int
	addrs map[netip.Addr]int
	pfxs  map[netip.Prefix]int
}

func newHandshakes(max, perAddr int) *handshakes {
	return &handshakes{max: max, perAddr: perAddr, perPrefix: min(4*perAddr, max),
		addrs: make(map[netip.Addr]int), pfxs: make(map[netip.Prefix]int)}
}

// install sets t's callbacks; t must not be in use yet.
func (h *handshakes) install(t *quicgo.Transport) {
	t.VerifySourceAddress = h.verify
	t.ConnContext = h.connContext
}

func (h *handshakes) verify(net.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total >= retryAbove
}

type handshakeKey struct{}

// handshake is one admitted handshake.
type handshake struct {
	h    *handshakes
	addr netip.Addr
	pfx  netip.Prefix
	once sync.Once
}

// sourceHost is what counts as one source address: the address itself
// for IPv4, its /64 for IPv6, where a host holds a whole /64 and would
// otherwise take its /48's share by using many.
func sourceHost(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func sourcePrefix(a netip.Addr) netip.Prefix {
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

func (h *handshakes) connContext(ctx context.Context, ci *quicgo.ClientInfo) (context.Context, error) {
	var addr netip.Addr
	if ua, ok := ci.RemoteAddr.(*net.UDPAddr); ok {
		addr = ua.AddrPort().Addr().Unmap()
	}
	pfx := sourcePrefix(addr)
	from := addr
	addr = sourceHost(addr)
	h.mu.Lock()
	if h.total >= h.max || h.addrs[addr] >= h.perAddr || h.pfxs[pfx] >= h.perPrefix {
		h.mu.Unlock()
		return ctx, post.Errorf(post.ErrRefused, "quic: too many handshakes from %v", from)
	}
	h.total++
	h.addrs[addr]++
	h.pfxs[pfx]++
	h.mu.Unlock()
	hs := &handshake{h: h, addr: addr, pfx: pfx}
	context.AfterFunc(ctx, hs.done)
	return withHooks(context.WithValue(ctx, handshakeKey{}, hs)), nil
}

func (hs *handshake) done() {
	hs.once.Do(func() {
		h := hs.h
		h.mu.Lock()
		defer h.mu.Unlock()
		h.total--
		if h.addrs[hs.addr]--; h.addrs[hs.addr] == 0 {
			delete(h.addrs, hs.addr)
		}
		if h.pfxs[hs.pfx]--; h.pfxs[hs.pfx] == 0 {
			delete(h.pfxs, hs.pfx)
		}
	})
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
