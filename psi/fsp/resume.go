package fsp

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"slices"
	"time"

	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// The resumed handshake (see doc.go, "Resumption"):
//
//	RESTORE           client nonce | ticket age (ms) | ticket length (16 bits) |
//	                  sealed ticket | sealed 0-RTT message length (16 bits) |
//	                  [0-RTT message, sealed under the early key] | [zeros];
//	                  EPHEMERAL_KEY, CONNECT_PARAM; header flag restoreEarly
//	                  if the initiator may send 0-RTT data
//	ACK_CONNECT_REQ   server nonce | flags (helloResumed, helloEarly,
//	                  helloTaken) | key confirmation; EPHEMERAL_KEY, CONNECT_PARAM
//
// A 0-RTT dial sends RESTORE without the message at once, and a copy
// with it (same nonce, key and ticket) when the first message is written
// before the handshake ends (conn_early.go). Both are padded with zeros
// to BaseDatagramSize, as QUIC pads a client's Initial: the listener may
// send 0.5-RTT data before the initiator confirms, up to three times what
// it received (conn_halfrtt.go).
//
// Both are tagged under BinderKey(resumption secret). The master secret
// mixes a fresh X25519 output with the resumption secret, so forward
// secrecy holds once the exchange completes; nobody signs anything.

// ACK_CONNECT_REQ flags of a resumed handshake: resumed, 0-RTT data
// accepted, and the 0-RTT message taken (the initiator need not send it
// again).
const (
	helloResumed = 2
	helloEarly   = 4
	helloTaken   = 8
)

// restoreEarly is RESTORE's header flag saying that the initiator may
// send 0-RTT data (Config.Allow0RTT); the binder covers it.
const restoreEarly = 1 << 4

// resumeState is a ticket the client holds, taken out of the cache.
type resumeState struct {
	blob     []byte // the sealed ticket
	secret   []byte // resumption secret
	received time.Time
	chain    []*x509.Certificate // the server's verified chain
	held     []heldPacket        // what came before the answer (conn_halfrtt.go)
	reused   bool                // an earlier dial took it: no 0-RTT
}

// ticketMetaLen is the length of what the client keeps with a ticket:
// version, receive time (Unix ms), resumption secret, and whether a dial
// took it.
const ticketMetaLen = 1 + 8 + fcrypto.SecretLen + 1

// allow0RTT reports whether a dial presenting rs may send 0-RTT data.
func (c *Conn) allow0RTT(rs *resumeState) bool { return c.cfg.Allow0RTT && !rs.reused }

// ticketCacheKey names the listener a ticket is for in
// Security.SessionCache: the server name checked, and the address.
func (c *Conn) ticketCacheKey() string {
	return "fsp:" + c.cfg.Security.ServerName + "|" + c.remote.String()
}

// takeTicket returns the cached ticket for this dial's listener. The
// first dial to take a ticket may send 0-RTT data on it, and marks it
// taken; dials after it, until the ticket of a later connection replaces
// it, resume on it without 0-RTT (as crypto/tls reuses a TLS 1.3 ticket
// for QUIC and TCP), so concurrent dials all resume. Called with c.mu
// held.
func (c *Conn) takeTicket(now time.Time) *resumeState {
	cache := c.cfg.Security.SessionCache
	if cache == nil || c.parent != nil {
		return nil
	}
	key := c.ticketCacheKey()
	cs, ok := cache.Get(key)
	if !ok || cs == nil {
		return nil
	}
	rs, extra := c.openCached(cs, now)
	if rs == nil {
		cache.Put(key, nil)
		return nil
	}
	if !rs.reused {
		extra = slices.Clone(extra) // the cached state is shared: not in place
		extra[0] = append(bytes.Clone(extra[0][:ticketMetaLen-1]), 1)
		taken, err := tls.NewResumptionState(rs.blob, &tls.SessionState{Extra: extra})
		if err != nil {
			taken = nil
		}
		cache.Put(key, taken)
	}
	return rs
}

// openCached decodes a cached ticket and checks it is still good for
// this dial; it returns nil if not, and the state's Extra.
func (c *Conn) openCached(cs *tls.ClientSessionState, now time.Time) (*resumeState, [][]byte) {
	blob, st, err := cs.ResumptionState()
	if err != nil || st == nil || len(st.Extra) < 1 || len(st.Extra[0]) != ticketMetaLen || st.Extra[0][0] != ticketVersion {
		return nil, nil
	}
	meta := st.Extra[0]
	rs := &resumeState{
		blob:     blob,
		received: time.UnixMilli(int64(binary.BigEndian.Uint64(meta[1:]))),
		secret:   meta[9 : 9+fcrypto.SecretLen],
		reused:   meta[ticketMetaLen-1] != 0,
	}
	if now.Sub(rs.received) >= ticketLifetime || len(blob) > maxTicket {
		return nil, nil
	}
	for _, der := range st.Extra[1:] {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil
		}
		rs.chain = append(rs.chain, cert)
	}
	// The cache may be shared by dials with other trust settings: the
	// listener's chain must pass this dial's (no signature is checked,
	// and a pin costs a hash).
	if c.cfg.Security.VerifyPeer(rs.chain, false) != nil {
		return nil, nil
	}
	return rs, st.Extra
}

// storeTicket caches a NEW_TICKET from the listener. Called with c.mu
// held.
func (c *Conn) storeTicket(pt []byte) {
	cache := c.cfg.Security.SessionCache
	if cache == nil || !c.initiator || c.parent != nil || c.resBase == nil || len(pt) < ticketNonceLen+ticketSealing+ticketFixed || len(pt) > ticketNonceLen+maxTicket {
		return
	}
	secret := fcrypto.ResumptionSecret(c.resBase, pt[:ticketNonceLen])
	meta := make([]byte, 0, ticketMetaLen)
	meta = append(meta, ticketVersion)
	meta = binary.BigEndian.AppendUint64(meta, uint64(time.Now().UnixMilli()))
	meta = append(meta, secret...)
	meta = append(meta, 0) // not taken yet
	extra := [][]byte{meta}
	for _, cert := range c.peerCerts {
		extra = append(extra, cert.Raw)
	}
	cs, err := tls.NewResumptionState(bytes.Clone(pt[ticketNonceLen:]), &tls.SessionState{Extra: extra})
	if err == nil {
		cache.Put(c.ticketCacheKey(), cs)
	}
}

// issueTicket sends the client a NEW_TICKET once the connection is
// confirmed, or at once on a 0-RTT resumption: its nonce and the ticket,
// sealed under the listener's ticket key, holding the resumption secret
// and the client's verified identity. A new one goes until the client
// acknowledges one (ticket_resend.go), and before a 0-RTT resumption is
// confirmed on its repeated RESTORE (resendHalf) or the copy carrying
// the first message (takeEarly). Called with c.mu held.
func (c *Conn) issueTicket(now time.Time) {
	l := c.listener
	if l == nil || c.initiator || c.resBase == nil || c.tx == nil {
		return
	}
	var nonce [ticketNonceLen]byte
	rand.Read(nonce[:])
	tk := ticket{issued: now, secret: fcrypto.ResumptionSecret(c.resBase, nonce[:]), server: l.idDigest}
	if rtt, ok := c.rtt.Estimate(); ok {
		tk.rtt = rtt // seeds the resumed connection's estimate
	}
	if !(len(c.peerCerts) == 1 && c.peerCerts[0] == l.pskLeaf) {
		for _, cert := range c.peerCerts {
			tk.chain = append(tk.chain, cert.Raw)
		}
	}
	blob := l.tickets.seal(&tk, now)
	if len(blob) > maxTicket || len(tk.chain) > wire.MaxChain {
		return // RESTORE would not fit a handshake packet
	}
	body := append(nonce[:], blob...)
	p := c.header(wire.Ticket, 0, c.snd.Next())
	hdr := wire.AppendHeader(make([]byte, 0, overhead+len(body)), &p)
	pn := c.pn
	c.pn++
	c.stats.PacketsSent++
	if out, err := c.tx.Seal(hdr, pn, hdr, body); err == nil && c.ampRoom(len(out)) {
		c.stats.BytesSent += uint64(len(out))
		c.ampSent(len(out))
		c.t.write(out, &c.remote)
	}
	c.ticketSent(now) // again until acknowledged (ticket_resend.go)
}

// restorePacket builds RESTORE for rs, carrying early (sealed under the
// early key) unless it is nil. Called with c.mu held.
func (c *Conn) restorePacket(rs *resumeState, now time.Time, early []byte) []byte {
	p := wire.Packet{
		Header:       wire.Header{Opcode: wire.Restore, Src: c.local},
		HasParam:     true,
		Param:        c.myParam(),
		EphemeralKey: c.kp.Public[:],
	}
	if c.allow0RTT(rs) {
		p.Flags = restoreEarly
	}
	b := wire.AppendHeader(make([]byte, 0, maxHandshakeSize), &p)
	b = append(b, c.nonce[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(max(0, now.Sub(rs.received).Milliseconds())))
	b = binary.BigEndian.AppendUint16(b, uint16(len(rs.blob)))
	b = append(b, rs.blob...)
	if early != nil {
		// The early key protects the message; everything before it is
		// its associated data.
		b = binary.BigEndian.AppendUint16(b, uint16(len(early)+fcrypto.TagLen))
		d := fcrypto.NewDirection(fcrypto.EarlySecret(rs.secret, c.nonce[:]))
		b, _ = d.Seal(b, 0, b, early)
	} else {
		b = binary.BigEndian.AppendUint16(b, 0)
	}
	if c.allow0RTT(rs) {
		b = append(b, make([]byte, max(0, BaseDatagramSize-fcrypto.TagLen-len(b)))...)
	}
	tag := fcrypto.HandshakeTag(fcrypto.BinderKey(rs.secret), b)
	return append(b, tag[:]...)
}

// earlyRoom is the largest 0-RTT message RESTORE can carry for rs without
// exceeding BaseDatagramSize. Called with c.mu held.
func earlyRoom(rs *resumeState) int {
	return BaseDatagramSize - restoreOverhead - 2 - len(rs.blob) - fcrypto.TagLen
}

// restoreRequest is a parsed RESTORE body.
type restoreRequest struct {
	nonce  []byte
	age    time.Duration
	ticket []byte
	aad    []byte // the packet up to the 0-RTT message
	early  []byte // the sealed 0-RTT message, if any
}

// parseRestore splits a RESTORE's payload (tag included). It never
// panics.
func parseRestore(pkt *wire.Packet) (*restoreRequest, error) {
	b := pkt.Payload
	if !pkt.HasParam || len(pkt.EphemeralKey) != fcrypto.PublicLen || pkt.Src <= 0xffff ||
		len(b) < fcrypto.NonceLen+6+ticketSealing+ticketFixed+2+fcrypto.TagLen {
		return nil, post.Errorf(post.ErrMalformed, "fsp: bad RESTORE")
	}
	b = b[:len(b)-fcrypto.TagLen]
	n := int(binary.BigEndian.Uint16(b[fcrypto.NonceLen+4:]))
	rest := b[fcrypto.NonceLen+6:]
	if n+2 > len(rest) {
		return nil, post.Errorf(post.ErrMalformed, "fsp: bad RESTORE")
	}
	e := int(binary.BigEndian.Uint16(rest[n:]))
	if n+2+e > len(rest) || e > 0 && e < fcrypto.TagLen {
		return nil, post.Errorf(post.ErrMalformed, "fsp: bad RESTORE")
	}
	r := &restoreRequest{
		nonce:  b[:fcrypto.NonceLen],
		age:    time.Duration(binary.BigEndian.Uint32(b[fcrypto.NonceLen:])) * time.Millisecond,
		ticket: rest[:n],
		aad:    pkt.HeaderBytes[:len(pkt.HeaderBytes)+fcrypto.NonceLen+6+n+2],
	}
	if e > 0 {
		r.early = rest[n+2 : n+2+e]
	}
	return r, nil
}

// resumeSecret is what the resumed master secret mixes with the X25519
// output: the ticket's secret, and the PSK if any.
func resumeSecret(res, psk []byte) []byte { return append(bytes.Clone(res), psk...) }

// respondResumed runs the responder's side of a RESTORE of n bytes whose
// ticket and binder checked out, for the client identity certs
// (ticketPeer). With 0-RTT accepted (early) the data path opens at once,
// for 0.5-RTT data (conn_halfrtt.go).
func (c *Conn) respondResumed(tk *ticket, certs []*x509.Certificate, req *restoreRequest, pkt *wire.Packet, n int, early bool) error {
	kp, err := fcrypto.NewKeyPair()
	if err != nil {
		return err
	}
	shared, err := kp.Shared(pkt.EphemeralKey)
	if err != nil {
		return post.Errorf(post.ErrMalformed, "fsp: bad ephemeral key")
	}
	rand.Read(c.nonce[:])
	myParam := c.myParam()
	flags := byte(helloResumed)
	if early {
		flags |= helloEarly
	}
	c.mu.Lock()
	if early && c.openEarly(tk.secret, req) {
		flags |= helloTaken
	}
	c.mu.Unlock()
	master := fcrypto.MasterSecret(shared, resumeSecret(tk.secret, c.cfg.Security.PSK), req.nonce, c.nonce[:])
	p := wire.Packet{
		Header:       wire.Header{Opcode: wire.AckConnectReq, Dst: pkt.Src, Src: c.local},
		HasParam:     true,
		Param:        myParam,
		EphemeralKey: kp.Public[:],
	}
	binder := fcrypto.BinderKey(tk.secret)
	// answer is ACK_CONNECT_REQ with flags f; the flags are in the
	// transcript its key confirmation covers.
	answer := func(f byte) []byte {
		digest := transcript(pkt.Src, c.local, req.nonce, c.nonce[:], pkt.EphemeralKey, kp.Public[:],
			&pkt.Param, &myParam, f, [][]byte{req.ticket})
		confirm := fcrypto.HandshakeTag(fcrypto.ConfirmKey(master), digest)
		body := make([]byte, 0, fcrypto.NonceLen+1+fcrypto.TagLen)
		body = append(append(append(body, c.nonce[:]...), f), confirm[:]...)
		return handshakePacket(nil, binder, &p, body)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.hsKey = binder
	c.peerNonce = bytes.Clone(req.nonce)
	c.peerKnown = true
	c.peerParam = pkt.Param
	c.master = master
	c.resBase = fcrypto.ResumptionBase(master)
	c.resumed = true
	c.used0RTT = early
	// No round trip is measured before the confirmation, which a 0-RTT
	// connection handed to Accept at once does not wait for: until
	// then, the estimate of the session that issued the ticket.
	c.rtt.SetInitial(tk.rtt)
	c.installKeys()
	c.peerCerts = certs
	c.hsPacket = answer(flags)
	now := time.Now()
	c.hsSentAt = now
	if !early {
		c.state = stateAffirming
		c.t.write(c.hsPacket, &c.remote)
		c.armTimer()
		return nil
	}
	c.earlyResp = &earlyResp{recv: n, sent: len(c.hsPacket)}
	if flags&helloTaken == 0 {
		// The first message may come in a copy of the RESTORE
		// (takeEarly, conn_early.go).
		c.earlyResp.secret, c.earlyResp.taken = tk.secret, answer(flags|helloTaken)
	}
	// The answer goes first: data the client got before it would be
	// dropped. The next ticket follows at once, ahead of any 0.5-RTT
	// data: a client that reads the server's reply and closes has it.
	c.t.write(c.hsPacket, &c.remote)
	c.establish(now)
	c.issueTicket(now)
	c.armTimer()
	return nil
}

// finishResume completes a resumed dial on the listener's answer, whose
// tag checked out under the binder key. Called with c.mu held.
func (c *Conn) finishResume(pkt *wire.Packet, body []byte, now time.Time) error {
	rs := c.resume
	if !pkt.HasParam || len(pkt.EphemeralKey) != fcrypto.PublicLen || pkt.Src <= 0xffff ||
		len(body) != fcrypto.NonceLen+1+fcrypto.TagLen || body[fcrypto.NonceLen]&^(helloEarly|helloTaken) != helloResumed {
		return post.Errorf(post.ErrMalformed, "fsp: bad resumed ACK_CONNECT_REQ")
	}
	sNonce, flags, confirmGot := body[:fcrypto.NonceLen], body[fcrypto.NonceLen], body[fcrypto.NonceLen+1:]
	shared, err := c.kp.Shared(pkt.EphemeralKey)
	if err != nil {
		return post.Errorf(post.ErrAuthentication, "fsp: bad ephemeral key")
	}
	myParam := c.myParam()
	digest := transcript(c.local, pkt.Src, c.nonce[:], sNonce, c.kp.Public[:], pkt.EphemeralKey,
		&myParam, &pkt.Param, flags, [][]byte{rs.blob})
	master := fcrypto.MasterSecret(shared, resumeSecret(rs.secret, c.cfg.Security.PSK), c.nonce[:], sNonce)
	confirm := fcrypto.HandshakeTag(fcrypto.ConfirmKey(master), digest)
	if string(confirm[:]) != string(confirmGot) {
		return post.Errorf(post.ErrAuthentication, "fsp: resumed key confirmation failed")
	}
	c.peer, c.peerKnown = pkt.Src, true
	c.peerParam = pkt.Param
	c.master = master
	c.resBase = fcrypto.ResumptionBase(master)
	c.installKeys()
	c.peerCerts = rs.chain
	c.resumed = true
	// 0-RTT was used if the listener accepted it and no first message
	// waited for the handshake; the message need not go again if the
	// listener took it.
	c.used0RTT = flags&helloEarly != 0 && c.earlyState != earlyNone
	c.earlyTaken = flags&helloTaken != 0 && c.earlyState == earlySent
	c.resume, c.kp, c.hsPacket = nil, nil, nil
	c.establish(now)
	c.handshakeRTT() // RESTORE and its answer
	c.ackReq = true
	c.rtoAt = now.Add(hsInitialRTO)
	c.openEstablished()
	return nil
}

// Resumed reports whether the connection was set up by resuming an
// earlier session with a ticket, without a certificate exchange.
func (c *Conn) Resumed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resumed
}
