package fsp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/internal/strike"
	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Listener accepts FSP connections.
type Listener struct {
	t             *Transport
	cfg           *Config
	id            *tls.Certificate
	pskLeaf       *x509.Certificate // the PSK-derived identity of initiators, with a PSK
	chainLen      int
	ownsTransport bool
	accept        acceptQueue
	bud           *budget       // memory budget (budget.go)
	conns         *hsrate.Conns // connections per source (Config.MaxConnsPerSource)
	done          chan struct{}
	closeOnce     sync.Once
	refusedOnce   sync.Once
	refused       chan error       // see Refused
	tickets       ticketKeys       // resumption (ticket.go)
	idDigest      [32]byte         // names this listener's identity in its tickets
	strikes       *strike.Register // anti-replay of RESTORE (strike.go)
	earlyTickets  *strike.Register // tickets 0-RTT was taken on (strike.go)
}

// Refused delivers the error of each client the listener refused for its
// credentials after the key exchange (a CLIENT_AUTH that did not check
// out), and of each client that refused the listener's (a protected
// RESET). Such clients completed the cookie round trip, so their address
// is real. A listener waiting for one known peer, as on a peer-to-peer
// path, can stop waiting; others may ignore it. Errors wrap
// post.ErrAuthentication; they are dropped while 8 are unread.
func (l *Listener) Refused() <-chan error { return l.refusals() }

func (l *Listener) refusals() chan error {
	l.refusedOnce.Do(func() { l.refused = make(chan error, 8) })
	return l.refused
}

// refuse reports a refused client to Refused.
func (l *Listener) refuse(err error) {
	if l == nil {
		return
	}
	select {
	case l.refusals() <- err:
	default:
	}
}

// Accept returns the next connection whose handshake completed.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		if l.closed() {
			return nil, post.Errorf(post.ErrClosed, "fsp: listener closed")
		}
		if c := l.accept.pop(); c != nil {
			return c, nil
		}
		select {
		case <-l.accept.ready:
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// acceptQueue holds confirmed connections until Accept takes them. It
// has no fixed size: every connection in it is charged to the listener's
// memory budget, which bounds it, so a burst of dials waits in it
// instead of being reset after the client's Dial returned.
type acceptQueue struct {
	mu    sync.Mutex
	q     []*Conn
	head  int
	ready chan struct{} // signalled when q gains one
}

func (a *acceptQueue) push(c *Conn) {
	a.mu.Lock()
	a.q = append(a.q, c)
	a.mu.Unlock()
	signal(a.ready)
}

// pop returns the oldest connection, or nil.
func (a *acceptQueue) pop() *Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.head == len(a.q) {
		return nil
	}
	c := a.q[a.head]
	a.q[a.head] = nil
	a.head++
	switch {
	case a.head == len(a.q):
		a.q, a.head = a.q[:0], 0
	case a.head >= 64 && 2*a.head >= len(a.q):
		// A queue that never drains (arrivals keep pace with Accept)
		// would otherwise grow its array by every connection ever queued.
		n := copy(a.q, a.q[a.head:])
		clear(a.q[n:])
		a.q, a.head = a.q[:n], 0
	}
	if a.head < len(a.q) {
		signal(a.ready) // for another Accept
	}
	return c
}

func (a *acceptQueue) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.q) - a.head
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.t.Conn.LocalAddr() }

// Transport returns the transport the listener runs on.
func (l *Listener) Transport() *Transport { return l.t }

// Close stops accepting; new connection attempts are refused with RESET.
// Connections already accepted stay open. If Listen created the socket, it
// closes with the last of them (and the last user of NonFSPConn).
func (l *Listener) Close() error {
	l.t.mu.Lock()
	if l.t.listener == l {
		l.t.listener = nil
	}
	idle := false
	if l.ownsTransport {
		l.t.closeWhenIdle = true
		idle = len(l.t.conns) == 0 && l.t.foreignUsers == 0
	}
	l.t.mu.Unlock()
	l.shutdown()
	if idle {
		return l.t.Close()
	}
	return nil
}

func (l *Listener) shutdown() {
	l.closeOnce.Do(func() {
		close(l.done)
		for c := l.accept.pop(); c != nil; c = l.accept.pop() {
			c.teardown(post.Errorf(post.ErrClosed, "fsp: listener closed"), true)
		}
	})
}

func (l *Listener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// deliver hands a confirmed connection, charged to the budget, to
// Accept.
func (l *Listener) deliver(c *Conn) {
	l.accept.push(c)
	if l.closed() {
		// Closed meanwhile: shutdown may have drained the queue already.
		for c := l.accept.pop(); c != nil; c = l.accept.pop() {
			c.teardown(post.Errorf(post.ErrRefused, "fsp: listener closed"), true)
		}
	}
}

// handleListener answers INIT_CONNECT and CONNECT_REQUEST. Until a cookie
// checks out it keeps no state at all.
func (t *Transport) handleListener(b []byte, from *peerAddr, pkt *wire.Packet) {
	t.mu.Lock()
	l := t.listener
	t.mu.Unlock()
	if pkt.Opcode != wire.InitConnect && pkt.Opcode != wire.ConnectRequest && pkt.Opcode != wire.Restore || pkt.Src <= 0xffff {
		return // initiators use ALFIDs above the well-known range
	}
	if l == nil || l.closed() {
		t.refuseHandshake(from, pkt, len(b))
		return
	}
	if pkt.Opcode == wire.Restore {
		t.handleRestore(l, b, from, pkt)
		return
	}
	key := fcrypto.HandshakeKey(l.cfg.Security.PSK, pkt.Src)
	if _, ok := fcrypto.VerifyHandshakeTag(key, b); !ok || len(pkt.Payload) < fcrypto.TagLen {
		if !ok && pkt.Opcode == wire.InitConnect && len(pkt.Payload) == fcrypto.NonceLen+fcrypto.TagLen {
			// Not our handshake key: a PSK mismatch. Say so, no louder
			// than the request.
			t.refuse(from, pkt)
		}
		return
	}
	body := pkt.Payload[:len(pkt.Payload)-fcrypto.TagLen]
	now := time.Now()
	switch pkt.Opcode {
	case wire.InitConnect:
		if len(body) != fcrypto.NonceLen {
			return
		}
		t.sendCookie(key, from, pkt.Src, body, nil, now, len(b))
	case wire.ConnectRequest:
		if len(body) < fcrypto.CookieLen+fcrypto.NonceLen || !pkt.HasParam || len(pkt.EphemeralKey) != fcrypto.PublicLen {
			return
		}
		// The rest is padding.
		cookie, nonce := body[:fcrypto.CookieLen], body[fcrypto.CookieLen:fcrypto.CookieLen+fcrypto.NonceLen]
		if !t.jar.Verify(now, cookie, from.ap, pkt.Src, nonce) {
			// Expired (a busy listener took longer than the cookie's
			// lifetime to get to it) or made before a restart: a fresh
			// cookie, as to INIT_CONNECT, with the stale one after it
			// (a renewal, not a late answer to INIT_CONNECT), and still
			// smaller than the request. Dropped, the client would repeat
			// the dead one until its dial timed out.
			t.sendCookie(key, from, pkt.Src, nonce, cookie, now, len(b))
			return
		}
		pk := pendingKey{from.ap, pkt.Src}
		t.mu.Lock()
		c := t.pending.get(pk)
		confirmed := c == nil && t.responders[pk] != nil
		t.mu.Unlock()
		if c != nil {
			c.resendAffirm(nonce, len(b))
			return
		}
		if confirmed {
			return // a copy of a handshake that completed: no second one
		}
		// The connection counts against its source's bound from here
		// until it closes; a source at its bound is refused before any
		// key exchange.
		uncount := t.countConn(l, from, pkt, len(b))
		if uncount == nil {
			return
		}
		if !t.allowHandshake(from.ap.Addr(), now, l.cfg.handshakeRate()) {
			uncount()
			return // the client retransmits
		}
		src := pendingPrefix(from.ap.Addr())
		if !t.hs.room(src) {
			uncount()
			return // the workers' queue full, no prefix holds more of it: the client retransmits
		}
		t.mu.Lock()
		evicted, room := t.pending.makeRoom(from.ap.Addr(), now, l.cfg)
		t.mu.Unlock()
		for _, e := range evicted {
			// Silently: its client, if any, retransmits CONNECT_REQUEST.
			e.teardown(post.Errorf(post.ErrTimeout, "fsp: handshake evicted from the pending table"), false)
		}
		if !room {
			uncount()
			return // every entry in the way is fresh: the client retransmits
		}
		c = newConn(t, l.cfg, false, *from)
		c.peer = pkt.Src
		c.listener = l
		c.uncount = uncount
		if err := t.register(c); err != nil {
			uncount()
			return
		}
		t.mu.Lock()
		t.pending.add(pk, c, now)
		if t.responders == nil {
			t.responders = make(map[pendingKey]*Conn)
		}
		t.responders[pk] = c
		t.mu.Unlock()
		// Refused loudly now if the budget has no room, but charged only
		// once the client confirms (handlePacket): a flood of handshakes
		// never completed must not fill the budget and lock others out.
		if !l.roomFor(from.ap.Addr()) {
			c.teardown(post.Errorf(post.ErrRefused, "fsp: listener over its memory budget"), false)
			t.refuseHandshake(from, pkt, len(b))
			return
		}
		// The key exchange and the signature run on a worker; the read
		// loop goes on routing.
		req := newConnectReq(key, nonce, pkt, len(b))
		peer := *from
		drop := func() {
			// Silently, as an eviction from the pending table.
			c.teardown(post.Errorf(post.ErrTimeout, "fsp: handshake queue full"), false)
		}
		if !t.hs.submit(src, hsJob{run: func() {
			if err := c.respond(req); err != nil {
				t.log.Debug("fsp: handshake failed", "peer", peer, "err", err)
				c.teardown(err, true)
			}
		}, drop: drop}) {
			drop()
		}
	}
}

// sendCookie answers a handshake request of reqLen bytes with
// ACK_INIT_CONNECT and a fresh cookie for the client's address, ALFID src
// and nonce: an INIT_CONNECT, or (stale set, and echoed after the fresh
// one) a CONNECT_REQUEST whose cookie no longer checks out. It keeps no
// state, and its answer is smaller than either request.
func (t *Transport) sendCookie(key []byte, to *peerAddr, src uint32, nonce, stale []byte, now time.Time, reqLen int) {
	cookie := t.jar.Make(now, to.ap, src, nonce)
	reply := wire.Packet{Header: wire.Header{Opcode: wire.AckInitConnect, Dst: src}}
	var arr [wire.HeaderLen + 2*fcrypto.CookieLen + fcrypto.TagLen]byte
	if p := handshakePacket(arr[:0], key, &reply, append(cookie[:], stale...)); len(p) <= reqLen {
		t.write(p, to)
	}
}
