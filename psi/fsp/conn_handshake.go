package fsp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// ---- Handshake ----------------------------------------------------------

func (c *Conn) myParam() wire.ConnectParam {
	return wire.ConnectParam{Window: uint32(c.rcvCap), Association: c.cfg.Association}
}

func (c *Conn) dial(ctx context.Context) error {
	kp, err := fcrypto.NewKeyPair()
	if err != nil {
		return err
	}
	rand.Read(c.nonce[:])
	c.mu.Lock()
	if err := dialSecurity(&c.cfg.Security, c.remote.ap.Addr()); err != nil {
		c.failLocked(err)
		c.mu.Unlock()
		return err
	}
	c.kp = kp
	psk := c.cfg.Security.PSK
	c.hsKey = fcrypto.HandshakeKey(psk, c.local)
	now := time.Now()
	if rs := c.takeTicket(now); rs != nil {
		// Resume with one round trip; a listener that cannot take the
		// ticket answers with a cookie, as to INIT_CONNECT.
		c.resume = rs
		c.hsPacket = c.restorePacket(rs, now, nil)
		if c.allow0RTT(rs) {
			// 0-RTT: RESTORE leaves now and Dial returns; the first
			// message may follow in a copy of it (conn_early.go).
			c.earlyState = earlyOpen
			c.state = stateInitiating
			c.sendHandshake(now)
			c.armTimer()
			err := c.err
			c.mu.Unlock()
			return err
		}
	} else {
		p := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: c.local}}
		c.hsPacket = handshakePacket(nil, c.hsKey, &p, c.nonce[:])
	}
	c.state = stateInitiating
	c.sendHandshake(now)
	c.armTimer()
	c.mu.Unlock()

	select {
	case <-c.established:
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			// A handshake the dialler's deadline cut short timed out,
			// as QUIC's and TCP's do.
			err = fmt.Errorf("%w: handshake: %w", post.ErrTimeout, err)
		}
		c.teardown(err, false)
		return err
	}
	c.mu.Lock()
	err = c.err
	c.mu.Unlock()
	return err
}

func (c *Conn) sendHandshake(now time.Time) {
	if err := c.t.write(c.hsPacket, &c.remote); err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED) && c.t.recvErr.Load():
			c.failLocked(post.Errorf(post.ErrRefused, "fsp: port unreachable"))
			return
		case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
			// No route to the listener (the kernel's answer to this
			// send): waiting out the handshake timeout changes nothing.
			c.failLocked(post.Errorf(post.ErrRefused, "fsp: %v", err))
			return
		}
	}
	c.rtoAt = now.Add(min(hsInitialRTO<<c.hsTries, hsMaxRTO))
	c.hsTries++
	c.hsSentAt = now
}

// onHandshakeReply handles ACK_INIT_CONNECT and ACK_CONNECT_REQ at the
// initiator, and refusals while connecting; dst is the local address the
// packet came to, if known. Called with c.mu held.
func (c *Conn) onHandshakeReply(b []byte, pkt *wire.Packet, dst netip.Addr) {
	if c.hsKey == nil {
		return
	}
	if c.resume != nil && pkt.Opcode == wire.AckConnectReq && c.state == stateInitiating {
		if _, ok := fcrypto.VerifyHandshakeTag(fcrypto.BinderKey(c.resume.secret), b); !ok || len(pkt.Payload) < fcrypto.TagLen {
			return
		}
		if err := c.finishResume(pkt, pkt.Payload[:len(pkt.Payload)-fcrypto.TagLen], time.Now()); err != nil {
			c.failLocked(err)
			return
		}
		c.noteLocal(dst) // before Dial returns: Path's local end
		c.trySend()
		return
	}
	if _, ok := fcrypto.VerifyHandshakeTag(c.hsKey, b); !ok || len(pkt.Payload) < fcrypto.TagLen {
		return
	}
	body := pkt.Payload[:len(pkt.Payload)-fcrypto.TagLen]
	now := time.Now()
	switch {
	case pkt.Opcode == wire.AckInitConnect && c.state == stateInitiating:
		if len(body) != fcrypto.CookieLen {
			return
		}
		c.resume = nil // the listener did not take our ticket: full handshake
		if c.earlyState == earlyOpen {
			c.earlyState = earlyNone // no 0-RTT on a full handshake
		}
		c.hsPacket = c.connectRequest(body)
		c.state = stateRequesting
		c.hsTries = 0
		c.sendHandshake(now)
	case pkt.Opcode == wire.AckInitConnect && c.state == stateRequesting:
		c.renewCookie(body, now)
	case pkt.Opcode == wire.AckConnectReq && c.state == stateRequesting:
		flight, err := c.hsFrags.add(body)
		if err != nil {
			return // not ours, or damaged: the signature would fail anyway
		}
		if flight == nil {
			// The listener sends three fragments for each request;
			// ask for more once they arrived.
			if c.hsFragsIn++; c.hsFragsIn >= 3 {
				c.hsFragsIn = 0
				c.t.write(c.hsPacket, &c.remote)
			}
			return
		}
		if err := c.finishDial(pkt, flight, now); err != nil {
			c.failLocked(err)
			return
		}
		c.noteLocal(dst)
		c.trySend()
	}
}

// connectRequest returns the CONNECT_REQUEST that echoes cookie, and
// keeps the cookie for renewCookie.
func (c *Conn) connectRequest(cookie []byte) []byte {
	c.cookie = append(c.cookie[:0], cookie...)
	p := wire.Packet{
		Header:       wire.Header{Opcode: wire.ConnectRequest, Src: c.local},
		HasParam:     true,
		Param:        c.myParam(),
		EphemeralKey: c.kp.Public[:],
	}
	// Padded to BaseDatagramSize: the listener answers with up to
	// three times what it received (flight.go).
	pad := BaseDatagramSize - len(wire.AppendHeader(nil, &p)) - fcrypto.TagLen
	payload := make([]byte, max(pad, fcrypto.CookieLen+fcrypto.NonceLen))
	copy(payload[copy(payload, cookie):], c.nonce[:])
	return handshakePacket(nil, c.hsKey, &p, payload)
}

// renewCookie takes the listener's answer to a CONNECT_REQUEST whose
// cookie had expired (the listener was too busy to get to it within the
// cookie's lifetime) or that a restarted listener could not check: a
// fresh cookie followed by the stale one, which must be ours (a late
// answer to a repeated INIT_CONNECT has no stale cookie and is ignored).
// The request leaves at once with the fresh cookie, at most once per
// hsMaxRTO, so a listener that refuses every cookie cannot make a
// ping-pong of it; its retransmissions keep their backoff. Called with
// c.mu held.
func (c *Conn) renewCookie(body []byte, now time.Time) {
	if len(body) != 2*fcrypto.CookieLen || !bytes.Equal(body[fcrypto.CookieLen:], c.cookie) {
		return
	}
	c.hsPacket = c.connectRequest(body[:fcrypto.CookieLen])
	if now.Before(c.reaffirmAt) {
		return // sent with the next retransmission
	}
	c.reaffirmAt = now.Add(hsMaxRTO)
	c.sendHandshake(now)
	c.armTimer()
}

func (c *Conn) finishDial(pkt *wire.Packet, body []byte, now time.Time) error {
	if !pkt.HasParam || len(pkt.EphemeralKey) != fcrypto.PublicLen || pkt.Src <= 0xffff {
		return post.Errorf(post.ErrMalformed, "fsp: bad ACK_CONNECT_REQ")
	}
	h, err := parseServerHello(body)
	if err != nil {
		return err
	}
	shared, err := c.kp.Shared(pkt.EphemeralKey)
	if err != nil {
		return post.Errorf(post.ErrAuthentication, "fsp: bad ephemeral key")
	}
	myParam := c.myParam()
	digest := transcript(c.local, pkt.Src, c.nonce[:], h.nonce, c.kp.Public[:], pkt.EphemeralKey,
		&myParam, &pkt.Param, h.flags, h.cred.Chain)
	master := fcrypto.MasterSecret(shared, c.cfg.Security.PSK, c.nonce[:], h.nonce)
	confirm := fcrypto.HandshakeTag(fcrypto.ConfirmKey(master), digest)
	if string(confirm[:]) != string(h.confirm) {
		return post.Errorf(post.ErrAuthentication, "fsp: key confirmation failed (PSK mismatch?)")
	}
	c.peer, c.peerKnown = pkt.Src, true
	c.peerParam = pkt.Param
	c.master = master
	c.resBase = fcrypto.ResumptionBase(master)
	c.installKeys()
	// From here on a refusal can be told to the responder, under the
	// session keys, so it forgets the attempt at once.
	certs, err := verifyCredential(&c.cfg.Security, &h.cred, digest, false)
	if err != nil {
		c.sendAuthReset()
		return err
	}
	c.peerCerts = certs
	if h.flags&helloClientCert != 0 {
		msg, err := clientCredential(c.cfg, digest)
		if err != nil {
			c.sendAuthReset()
			return err
		}
		c.authMsg, c.authWait = msg, true
	}
	c.kp, c.hsPacket = nil, nil
	c.establish(now)
	c.handshakeRTT()
	// Confirm to the responder at once (with CLIENT_AUTH if it asked);
	// repeated until it answers.
	c.ackReq = true
	c.rtoAt = now.Add(hsInitialRTO)
	if !c.authWait {
		c.openEstablished()
	}
	return nil
}

// sendAuthReset tells the peer, in a RESET protected under the session
// keys, that its credentials were refused. Called with c.mu held.
func (c *Conn) sendAuthReset() {
	if c.tx == nil {
		return
	}
	p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Flags: c.phaseFlag(), PN: uint32(c.pn), Dst: c.peer, Src: c.local}}
	hdr := wire.AppendHeader(make([]byte, 0, overhead+1), &p)
	pn := c.pn
	c.pn++
	if out, err := c.tx.Seal(hdr, pn, hdr, []byte{wire.ResetAuthentication}); err == nil {
		c.t.write(out, &c.remote)
	}
}

// sendClientAuth sends the initiator's CLIENT_AUTH, each time under a
// fresh packet number, until the responder's first protected packet
// confirms it. It goes out on its own: it may be larger than a data
// packet. Called with c.mu held.
func (c *Conn) sendClientAuth() {
	p := c.header(wire.ClientAuth, wire.FlagAckRequest, c.snd.Next())
	room := BaseDatagramSize - len(wire.AppendHeader(nil, &p)) - fcrypto.TagLen
	for _, frag := range splitFlight(c.authMsg, room) {
		p.PN = uint32(c.pn)
		hdr := wire.AppendHeader(make([]byte, 0, BaseDatagramSize), &p)
		pn := c.pn
		c.pn++
		c.stats.PacketsSent++
		if c.qlog != nil {
			c.qlog.sent(pn, &p, len(frag))
		}
		if out, err := c.tx.Seal(hdr, pn, hdr, frag); err == nil {
			c.stats.BytesSent += uint64(len(out))
			c.t.write(out, &c.remote)
		}
	}
	c.ackNow, c.ackReq = false, false
	c.ackPending = 0
	c.ackAt = time.Time{}
}

// onRefusal handles a RESET while connecting that carries
// wire.ResetAuthentication under RefusalKey(our nonce): the listener's
// handshake key is not ours. It reports whether the packet was one.
// Called with c.mu held.
func (c *Conn) onRefusal(b []byte, pkt *wire.Packet) bool {
	if c.state != stateInitiating || len(pkt.Payload) != 1+fcrypto.TagLen || pkt.Payload[0] != wire.ResetAuthentication {
		return false
	}
	if _, ok := fcrypto.VerifyHandshakeTag(fcrypto.RefusalKey(c.nonce[:]), b); !ok {
		return false
	}
	c.failLocked(post.Errorf(post.ErrAuthentication,
		"fsp: the listener refused the handshake: PSK mismatch (both ends need the same Security.PSK, or none)"))
	return true
}

// affirm filters the protected packets a responder receives before it
// hands the connection to Accept. A RESET ends the attempt. When the
// listener requires a client certificate, only a CLIENT_AUTH whose chain
// passes VerifyPeer and whose signature covers the transcript lets the
// connection through; a bad one is refused with a protected RESET. It
// reports whether the connection is now confirmed. Called with c.mu held.
func (c *Conn) affirm(pkt *wire.Packet, pt []byte) bool {
	if pkt.Opcode == wire.Reset {
		if len(pt) > 0 && pt[0] == wire.ResetAuthentication {
			err := post.Errorf(post.ErrAuthentication, "fsp: the client at %v refused our credentials", c.remote)
			c.listener.refuse(err)
			c.failLocked(err)
			return false
		}
		c.failLocked(post.Errorf(post.ErrReset, "fsp: initiator gave up the handshake"))
		return false
	}
	if c.clientDigest == nil {
		return true
	}
	if pkt.Opcode != wire.ClientAuth {
		return false // nothing else before the client proved itself
	}
	msg, err := c.hsFrags.add(pt)
	if err == nil && msg == nil {
		return false // more fragments to come
	}
	var cred wire.Credential
	var rest []byte
	if err == nil {
		cred, rest, err = wire.ParseCredential(msg)
	}
	var certs []*x509.Certificate
	switch {
	case err != nil || len(rest) != 0:
		err = post.Errorf(post.ErrAuthentication, "fsp: malformed CLIENT_AUTH")
	default:
		// At most GOMAXPROCS handshakes verify or sign at once.
		c.t.hs.acquire()
		certs, err = verifyCredential(&c.cfg.Security, &cred, clientTranscript(c.clientDigest, cred.Chain), true)
		c.t.hs.release()
	}
	if err != nil {
		c.log.Debug("fsp: client authentication failed", "remote", c.remote, "err", err)
		c.sendAuthReset()
		c.listener.refuse(fmt.Errorf("fsp: client at %v refused: %w", c.remote, err))
		c.failLocked(err)
		return false
	}
	c.peerCerts, c.clientDigest = certs, nil
	return true
}

// connectReq is what the responder keeps of a CONNECT_REQUEST whose
// cookie checked out, copied out of the read loop's buffer for a
// handshake worker (hspool.go).
type connectReq struct {
	key    []byte // the handshake key
	src    uint32
	nonce  [fcrypto.NonceLen]byte
	pub    [fcrypto.PublicLen]byte
	param  wire.ConnectParam
	reqLen int
}

func newConnectReq(key, nonce []byte, pkt *wire.Packet, reqLen int) *connectReq {
	r := &connectReq{key: key, src: pkt.Src, param: pkt.Param, reqLen: reqLen}
	copy(r.nonce[:], nonce)
	copy(r.pub[:], pkt.EphemeralKey)
	return r
}

// respond runs the responder's side on a CONNECT_REQUEST whose cookie
// checked out: the key exchange and the signature, on a handshake
// worker. A connection torn down meanwhile (evicted, transport closed)
// stays closed.
func (c *Conn) respond(req *connectReq) error {
	select {
	case <-c.done:
		return nil // evicted while queued: no key exchange for nobody
	default:
	}
	l := c.listener
	key, clientNonce := req.key, req.nonce[:]
	kp, err := fcrypto.NewKeyPair()
	if err != nil {
		return err
	}
	shared, err := kp.Shared(req.pub[:])
	if err != nil {
		return post.Errorf(post.ErrMalformed, "fsp: bad ephemeral key")
	}
	rand.Read(c.nonce[:])
	myParam := c.myParam()
	chain := l.id.Certificate
	var flags byte
	// A PSK alone needs no CLIENT_AUTH: CONNECT_REQUEST's tag and the
	// master secret already prove the initiator holds it, so the
	// handshake keeps its single round trip.
	if c.cfg.Security.ClientAuth {
		flags |= helloClientCert
	}
	digest := transcript(req.src, c.local, clientNonce, c.nonce[:], req.pub[:], kp.Public[:],
		&req.param, &myParam, flags, chain)
	master := fcrypto.MasterSecret(shared, c.cfg.Security.PSK, clientNonce, c.nonce[:])
	sig, err := signTranscript(l.id.PrivateKey, digest)
	if err != nil {
		return err
	}
	fl, err := newAffirmFlight(&affirmFlight{
		dst: req.src, src: c.local, param: myParam, pub: kp.Public,
		hello:   serverHello{nonce: c.nonce[:], flags: flags, cred: wire.Credential{Chain: chain, Sig: sig}},
		confirm: fcrypto.HandshakeTag(fcrypto.ConfirmKey(master), digest),
	})
	if err != nil {
		return err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return nil
	}
	c.hsKey = key
	c.peerNonce = append([]byte(nil), clientNonce...)
	c.peerKnown = true
	c.peerParam = req.param
	c.master = master
	c.resBase = fcrypto.ResumptionBase(master)
	c.installKeys()
	if flags&helloClientCert != 0 {
		c.clientDigest = digest
	} else if l.pskLeaf != nil {
		c.peerCerts = []*x509.Certificate{l.pskLeaf}
	}
	c.hsFlight = fl
	c.state = stateAffirming
	c.hsCredit = 3 * req.reqLen
	c.hsSentAt = time.Now() // before the answer can be
	c.sendFlight()
	c.armTimer()
	return nil
}

// sendFlight sends the next ACK_CONNECT_REQ fragments as far as the
// anti-amplification credit goes. Called with c.mu held.
func (c *Conn) sendFlight() {
	fl := c.hsFlight
	to := c.hsNext
	for credit := c.hsCredit; to < fl.n && credit >= fl.size(to); to++ {
		credit -= fl.size(to)
	}
	if to == c.hsNext {
		return
	}
	for _, p := range fl.packets(c.hsKey, c.hsNext, to) {
		c.hsCredit -= len(p)
		c.t.write(p, &c.remote)
		c.hsNext++
	}
}

// resendAffirm answers a repeated CONNECT_REQUEST (or RESTORE) of reqLen
// bytes: with the fragments not sent yet, or the whole answer again.
func (c *Conn) resendAffirm(nonce []byte, reqLen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.hsFlight != nil {
		if c.state != stateAffirming || string(nonce) != string(c.peerNonce) {
			return
		}
		c.hsCredit = min(c.hsCredit+3*reqLen, 3*BaseDatagramSize)
		if c.hsNext < c.hsFlight.n {
			c.sendFlight() // the client asks for the rest
			return
		}
		if !now.Before(c.reaffirmAt) {
			c.reaffirmAt = now.Add(hsInitialRTO / 2)
			c.hsNext = 0
			c.sendFlight()
			c.hsTries++
		}
		return
	}
	// At most one answer per half initial RTO: a CONNECT_REQUEST replayed
	// from the client's address must not make the large answer a flood.
	// A connection sending 0.5-RTT data (conn_halfrtt.go) answers too,
	// and sends its data again: the client dropped it without the keys.
	half := c.halfOpen() && c.state != stateClosed
	if half && string(nonce) == string(c.peerNonce) {
		c.ampReceived(reqLen)
	}
	if (c.state == stateAffirming || half) && string(nonce) == string(c.peerNonce) && !now.Before(c.reaffirmAt) {
		c.reaffirmAt = now.Add(hsInitialRTO / 2)
		c.ampSent(len(c.hsPacket))
		c.t.write(c.hsPacket, &c.remote)
		c.hsTries++ // the next RTT sample would be ambiguous
		if half {
			c.resendHalf()
		}
	}
}

// installKeys derives the traffic keys of generation keyGen from master.
func (c *Conn) installKeys() {
	if c.keyInitiator == 0 {
		c.keyInitiator, c.keyResponder = c.local, c.peer
		if !c.initiator {
			c.keyInitiator, c.keyResponder = c.peer, c.local
		}
	}
	i2r, r2i := fcrypto.TrafficSecrets(c.master, c.keyInitiator, c.keyResponder)
	tx, rx := i2r, r2i
	if !c.initiator {
		tx, rx = r2i, i2r
	}
	c.tx = fcrypto.NewDirection(tx)
	d := fcrypto.NewDirection(rx)
	d.Start(c.replay.Largest()) // keys only for the peer's current epoch and the next
	c.rx[c.keyGen&1] = d
}

// InstallKey mixes a secret agreed by the upper layer (for example by an
// application-level key exchange run over this connection) into the
// session keys. Packets sent after the call use the new keys, marked by
// the key phase flag; both ends must install the same secret, and
// packets the peer protects with a key not installed here yet are dropped
// until it is (retransmission recovers them).
func (c *Conn) InstallKey(secret []byte) error {
	if len(secret) < 16 {
		return post.Errorf(post.ErrAuthentication, "fsp: installed key shorter than 16 bytes")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateEstablished {
		return c.stateErr()
	}
	c.master = fcrypto.InstallSecret(c.master, secret)
	c.keyGen++
	c.installKeys()
	if c.qlog != nil {
		c.qlog.keyUpdated(c.keyGen)
	}
	return nil
}

// establish opens the data path. Sequence numbers start at 1 each way,
// or at 2 for the initiator's data once the listener took its first
// message, number 1, as 0-RTT data (conn_early.go).
func (c *Conn) establish(now time.Time) {
	sndFirst, rcvFirst := uint64(1), uint64(1)
	if c.initiator && c.earlyTaken {
		sndFirst = 2
	} else if !c.initiator && c.earlyIn {
		rcvFirst = 2
	}
	c.state = stateEstablished
	c.snd = reliability.NewSender[txData](sndFirst)
	c.rcv = reliability.NewReceiver[rxData](rcvFirst)
	c.peerLimit = sndFirst + uint64(c.peerParam.Window)
	c.peerExp, c.peerWin = sndFirst, uint64(c.peerParam.Window)
	c.advLimit = rcvFirst + uint64(c.rcvCap)
	c.rtt.SetMaxAckDelay(maxAckDelay)
	// A lower floor than TCP's 200 ms repairs a lone lost packet (the last
	// of a message, say) quickly; see docs/benchmarks-hol.md.
	c.rtt.SetMinRTO(minRTO)
	c.lastRecv, c.lastKA = now, now
	c.initPaths(now)
	c.ccJoin()
	c.traceStart(now)
	c.log.Debug("fsp: connection established", "local", c.local, "peer", c.peer, "remote", c.remote, "initiator", c.initiator)
}

// failLocked ends a connection attempt. Called with c.mu held.
func (c *Conn) failLocked(err error) {
	c.mu.Unlock()
	c.teardown(err, false)
	c.mu.Lock()
}
