package fsp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"net/netip"

	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
	"golang.org/x/crypto/hkdf"
)

// Stateless resets (as QUIC's, RFC 9000 §10.3): a listener gives the peer
// of each connection, under encryption, a reset token, a MAC of the
// connection's ALFIDs under a key derived from its private key. A
// listener restarted with the same key on the same address, which no
// longer knows the connection, answers the peer's next packet with a
// RESET carrying the token, and the peer ends the connection at once
// instead of at its idle timeout.

// resetKeyLabel separates the reset key from every other use of the
// listener's private key.
const resetKeyLabel = "postsockets fsp stateless reset key v1 "

// resetKeys makes a listener's reset tokens and bounds the stateless
// resets it sends.
type resetKeys struct {
	key [32]byte
	lim resetLimiter
}

// newResetKeys derives the reset key from the listener's private key and
// its socket's address, so that two listeners sharing a key on different
// ports cannot be asked for each other's tokens. A key that cannot be
// exported (a hardware signer) gets a random reset key: resets then
// outlive only the connections the listener forgot, not a restart.
func newResetKeys(id *tls.Certificate, local net.Addr) *resetKeys {
	r := &resetKeys{}
	r.lim.init()
	var der []byte
	if id != nil && id.PrivateKey != nil {
		der, _ = x509.MarshalPKCS8PrivateKey(id.PrivateKey)
	}
	if der == nil {
		rand.Read(r.key[:])
		return r
	}
	info := resetKeyLabel
	if local != nil {
		info += local.String()
	}
	if _, err := io.ReadFull(hkdf.New(sha256.New, der, nil, []byte(info)), r.key[:]); err != nil {
		rand.Read(r.key[:])
	}
	return r
}

// token returns the reset token of the connection whose ALFID at the
// listener's end is local and at the peer's end peer, and whose packets
// come to the local address at (IP_PKTINFO; invalid where the system
// does not say). The address keeps listeners that share a key and a
// socket address but not a host (a fleet with one certificate on
// 0.0.0.0:443, PSK peers on the same port) from giving out each other's
// tokens: asked about an ALFID pair it does not know, a listener answers
// with the token for its own address, not another's.
func (r *resetKeys) token(local, peer uint32, at netip.Addr) [wire.ResetTokenLen]byte {
	m := hmac.New(sha256.New, r.key[:])
	var ids [8 + 16]byte
	binary.BigEndian.PutUint32(ids[:], local)
	binary.BigEndian.PutUint32(ids[4:], peer)
	n := 8
	if at.IsValid() {
		a := at.Unmap().As16()
		n += copy(ids[8:], a[:])
	}
	m.Write(ids[:n])
	var t [wire.ResetTokenLen]byte
	copy(t[:], m.Sum(nil))
	return t
}

// statelessReset answers a packet of reqLen bytes from the peer's ALFID
// peer to local, an ALFID of ours no connection holds, with a stateless
// reset, if the listener has a reset key, the reset is smaller than the
// packet and the rate limits allow it. It reports whether it sent one;
// if not, the caller sends the plain RESET. The tag after the token is
// the plain RESET's, so a peer that holds no token (a clone closing
// before its token arrived) still takes it as that.
func (t *Transport) statelessReset(to *peerAddr, local, peer uint32, reqLen int, tagKey func() []byte) bool {
	r := t.reset.Load()
	if r == nil || reqLen <= wire.StatelessResetLen || !r.lim.allow(to.ap.Addr()) {
		return false
	}
	tok := r.token(local, peer, to.dst)
	p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: peer, Src: local}}
	var arr [wire.StatelessResetLen]byte
	b := wire.AppendHeader(arr[:0], &p)
	b = append(b, tok[:]...)
	tag := fcrypto.HandshakeTag(tagKey(), b)
	t.write(append(b, tag[:]...), to)
	return true
}
