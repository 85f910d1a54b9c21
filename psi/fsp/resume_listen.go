package fsp

import (
	"crypto/x509"
	"time"

	"github.com/postsockets/postsockets/internal/strike"
	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// handleRestore answers a RESTORE. A ticket the listener cannot take
// (another listener's, an old key, expired, another identity, a claim
// outside the anti-replay window, a full strike register) gets the
// cookie of a full handshake, which the client continues, and so does a
// replay of a RESTORE already taken; one whose binder fails gets nothing.
// A copy of a RESTORE being answered that carries the first message as
// 0-RTT data, sent when the initiator wrote it after RESTORE left, gives
// the message (takeEarly). Every answer is smaller than the RESTORE: it
// carries the ticket. A fresh RESTORE accepting 0-RTT hands the
// connection to Accept at once, and what it sends before the client
// confirms, answers included, stays within three times the RESTOREs'
// bytes (conn_halfrtt.go).
func (t *Transport) handleRestore(l *Listener, b []byte, from *peerAddr, pkt *wire.Packet) {
	req, err := parseRestore(pkt)
	if err != nil {
		return
	}
	pk := pendingKey{from.ap, pkt.Src}
	t.mu.Lock()
	c := t.pending.get(pk)
	confirmed := c == nil && t.responders[pk] != nil
	t.mu.Unlock()
	if c != nil {
		if req.early != nil && c.takeEarly(b, req) {
			// The first message, written after RESTORE left, came in
			// a copy of it: readable now on the connection handed out.
			return
		}
		c.resendAffirm(req.nonce, len(b)) // the client repeats its RESTORE
		return
	}
	if confirmed {
		return
	}
	now := time.Now()
	tk, err := l.tickets.open(req.ticket, now)
	if err != nil || tk.server != l.idDigest {
		t.restoreFallback(l, from, pkt, req.nonce, now)
		return
	}
	if _, ok := fcrypto.VerifyHandshakeTag(fcrypto.BinderKey(tk.secret), b); !ok {
		return
	}
	// A resumed connection counts against its source's bound as a new
	// one does (listener.go), before the strike register records it.
	uncount := t.countConn(l, from, pkt, len(b))
	if uncount == nil {
		return
	}
	if l.strikes.Check(req.nonce, tk.issued.Add(req.age), now) != strike.Fresh {
		// A replay, or a copy the register cannot judge: no resumption,
		// only a cookie, and no share of the handshake rate. (A client
		// whose first RESTORE was taken but dropped below gets here too
		// when it repeats it, and goes on with a full handshake.)
		uncount()
		t.restoreFallback(l, from, pkt, req.nonce, now)
		return
	}
	if !t.allowHandshake(from.ap.Addr(), now, l.cfg.handshakeRate()) {
		uncount()
		return
	}
	certs, err := l.ticketPeer(tk)
	if err != nil {
		// The client's certificate no longer passes (expired since
		// the ticket was issued): a full handshake checks it anew.
		uncount()
		t.restoreFallback(l, from, pkt, req.nonce, now)
		return
	}
	early := l.cfg.Allow0RTT && pkt.Flags&restoreEarly != 0
	if early && l.earlyTickets.Check(req.ticket, tk.issued.Add(req.age), now) != strike.Fresh {
		// Another dial took 0-RTT on this ticket moments ago (a client
		// whose concurrent dials took it at once): this one resumes
		// without, and its first message goes after the handshake.
		early = false
	}
	t.mu.Lock()
	evicted, room := t.pending.makeRoom(from.ap.Addr(), now, l.cfg)
	t.mu.Unlock()
	for _, e := range evicted {
		e.teardown(post.Errorf(post.ErrTimeout, "fsp: handshake evicted from the pending table"), false)
	}
	if !room {
		uncount()
		return
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
	if !l.admit(c, from.ap.Addr()) {
		c.teardown(post.Errorf(post.ErrRefused, "fsp: listener over its memory budget"), false)
		t.refuseHandshake(from, pkt, len(b))
		return
	}
	if err := c.respondResumed(tk, certs, req, pkt, len(b), early); err != nil {
		t.log.Debug("fsp: resumption failed", "peer", from, "err", err)
		c.teardown(err, true)
		return
	}
	if c.Used0RTT() {
		// 0-RTT accepted: hand the connection out now, with the 0-RTT
		// message if RESTORE carried one. It may send 0.5-RTT data
		// within the amplification bound (conn_halfrtt.go).
		l.deliver(c)
	}
}

// restoreFallback answers a RESTORE whose ticket is not taken with
// ACK_INIT_CONNECT, as if it were an INIT_CONNECT with the same nonce:
// the client goes on with a full handshake.
func (t *Transport) restoreFallback(l *Listener, from *peerAddr, pkt *wire.Packet, nonce []byte, now time.Time) {
	cookie := t.jar.Make(now, from.ap, pkt.Src, nonce)
	reply := wire.Packet{Header: wire.Header{Opcode: wire.AckInitConnect, Dst: pkt.Src}}
	var arr [wire.HeaderLen + fcrypto.CookieLen + fcrypto.TagLen]byte
	t.write(handshakePacket(arr[:0], fcrypto.HandshakeKey(l.cfg.Security.PSK, pkt.Src), &reply, cookie[:]), from)
}

// ticketPeer returns the client identity a ticket holds. A listener that
// asks clients for certificates (ClientAuth) checks that chain against
// its trust settings again, now, as a full handshake would: a
// certificate that expired after the ticket was issued gets no
// resumption, as over QUIC and TCP, where crypto/tls declines such a
// session and VerifyConnection runs on resumptions too. With a PSK and
// no chain the identity is the PSK's.
func (l *Listener) ticketPeer(tk *ticket) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, der := range tk.chain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, post.Errorf(post.ErrMalformed, "fsp: ticket holds a bad certificate")
		}
		certs = append(certs, cert)
	}
	if l.cfg.Security.ClientAuth {
		if err := l.cfg.Security.VerifyPeer(certs, true); err != nil {
			return nil, err
		}
	}
	if len(certs) == 0 && l.pskLeaf != nil {
		certs = []*x509.Certificate{l.pskLeaf}
	}
	return certs, nil
}
