package fsp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/netip"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// The handshake:
//
//	INIT_CONNECT      client nonce
//	ACK_INIT_CONNECT  cookie = timestamp | MAC(listener secret, client address, ALFID, nonce, timestamp)
//	CONNECT_REQUEST   cookie | client nonce; EPHEMERAL_KEY, CONNECT_PARAM
//	ACK_CONNECT_REQ   server nonce | flags | server credential | key confirmation;
//	                  EPHEMERAL_KEY, CONNECT_PARAM
//	CLIENT_AUTH       client credential, protected under the new keys; sent
//	                  only when flags ask for a client certificate
//
// The first four carry a truncated HMAC-SHA256 tag under HandshakeKey(PSK,
// client ALFID). A credential is a certificate chain and a signature with
// the leaf's key: the server signs the transcript below, so the ephemeral
// keys cannot be swapped; the client signs the transcript and its own
// chain. The confirmation MAC proves the server derived the same master
// secret (it matters with a PSK). A listener refuses an INIT_CONNECT whose
// tag fails under its key (a PSK mismatch) with a RESET carrying
// wire.ResetAuthentication, tagged under RefusalKey(client nonce) and
// smaller than the INIT_CONNECT; it refuses a bad CLIENT_AUTH with the
// same reason in a RESET protected under the session keys.

// helloClientCert is the ACK_CONNECT_REQ flag asking for CLIENT_AUTH.
const helloClientCert = 1

// transcript hashes everything both ends contributed.
func transcript(clientALFID, serverALFID uint32, cNonce, sNonce, cPub, sPub []byte,
	cParam, sParam *wire.ConnectParam, flags byte, chain [][]byte) []byte {
	h := sha256.New()
	h.Write([]byte("fsp/0 transcript"))
	var b [8]byte
	binary.BigEndian.PutUint32(b[:], clientALFID)
	binary.BigEndian.PutUint32(b[4:], serverALFID)
	h.Write(b[:])
	h.Write(cNonce)
	h.Write(sNonce)
	h.Write(cPub)
	h.Write(sPub)
	for _, p := range []*wire.ConnectParam{cParam, sParam} {
		var pb [24]byte
		binary.BigEndian.PutUint32(pb[:], p.Window)
		binary.BigEndian.PutUint32(pb[4:], p.MaxMessage)
		h.Write(pb[:8])
		h.Write(p.Association[:])
	}
	h.Write([]byte{flags})
	writeChain(h, chain)
	return h.Sum(nil)
}

// clientTranscript is what the client signs in CLIENT_AUTH: the
// handshake transcript, which already binds the server's chain, and the
// client's own chain.
func clientTranscript(digest []byte, chain [][]byte) []byte {
	h := sha256.New()
	h.Write([]byte("fsp/0 client auth"))
	h.Write(digest)
	writeChain(h, chain)
	return h.Sum(nil)
}

func writeChain(h hash.Hash, chain [][]byte) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(len(chain)))
	h.Write(b[:])
	for _, c := range chain {
		binary.BigEndian.PutUint32(b[:], uint32(len(c)))
		h.Write(b[:])
		h.Write(c)
	}
}

func signTranscript(key crypto.PrivateKey, digest []byte) ([]byte, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, digest), nil
	case *ecdsa.PrivateKey:
		return ecdsa.SignASN1(rand.Reader, k, digest)
	case *rsa.PrivateKey:
		return rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest, nil)
	case crypto.Signer:
		return k.Sign(rand.Reader, digest, crypto.SHA256)
	}
	return nil, errors.New("fsp: unsupported private key type")
}

func verifyTranscript(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, digest, sig)
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPSS(k, crypto.SHA256, digest, sig, nil) == nil
	}
	return false
}

// serverHello is the body of ACK_CONNECT_REQ.
type serverHello struct {
	nonce   []byte
	flags   byte
	cred    wire.Credential
	confirm []byte
}

func (h *serverHello) append(b []byte) ([]byte, error) {
	b = append(b, h.nonce...)
	b = append(b, h.flags)
	b, err := wire.AppendCredential(b, &h.cred)
	if err != nil {
		return nil, err
	}
	return append(b, h.confirm...), nil
}

func parseServerHello(b []byte) (*serverHello, error) {
	bad := post.Errorf(post.ErrMalformed, "fsp: bad ACK_CONNECT_REQ")
	if len(b) < fcrypto.NonceLen+1 {
		return nil, bad
	}
	h := &serverHello{nonce: b[:fcrypto.NonceLen], flags: b[fcrypto.NonceLen]}
	cred, rest, err := wire.ParseCredential(b[fcrypto.NonceLen+1:])
	if err != nil || len(rest) != fcrypto.TagLen {
		return nil, bad
	}
	h.cred, h.confirm = cred, rest
	return h, nil
}

// identity resolves the certificate a listener presents: the configured
// one or the PSK-derived one. A listener with neither cannot prove who
// it is, so it is an error.
func identity(cfg *Config) (*tls.Certificate, error) {
	s := &cfg.Security
	if err := s.Check(); err != nil {
		return nil, err
	}
	if len(s.Certificates) == 0 && len(s.PSK) == 0 {
		return nil, post.Errorf(post.ErrAuthentication,
			"fsp: a listener needs an identity: set Security.Certificates or Security.PSK")
	}
	id, err := s.Identity()
	if err != nil {
		return nil, fmt.Errorf("%w: fsp: %v", post.ErrAuthentication, err)
	}
	if len(id.Certificate) > wire.MaxChain {
		return nil, fmt.Errorf("fsp: certificate chain of %d certificates; at most %d fit", len(id.Certificate), wire.MaxChain)
	}
	return id, nil
}

// dialSecurity checks that a dialer can verify the listener at all, and
// names the address as the server name to check when chains are
// verified without one, as every stack does (psi.Security.ForDial).
func dialSecurity(s *psi.Security, remote netip.Addr) error {
	if err := s.Check(); err != nil {
		return err
	}
	if s.InsecureSkipVerify || len(s.PSK) > 0 || len(s.PinnedKeys) > 0 {
		return nil
	}
	if s.RootCAs == nil && s.ServerName == "" {
		return post.Errorf(post.ErrAuthentication, "fsp: no trust configured to verify the listener: "+
			"set Security.PSK, Security.PinnedKeys, or Security.RootCAs and ServerName (InsecureSkipVerify for tests only)")
	}
	*s = s.ForDial(remote)
	return nil
}

// clientCredential builds the body of CLIENT_AUTH.
func clientCredential(cfg *Config, digest []byte) ([]byte, error) {
	s := &cfg.Security
	if len(s.Certificates) == 0 && len(s.PSK) == 0 {
		return nil, post.Errorf(post.ErrAuthentication,
			"fsp: the listener requires a client certificate: set Security.Certificates or Security.PSK")
	}
	id, err := s.Identity()
	if err != nil {
		return nil, fmt.Errorf("%w: fsp: client identity: %v", post.ErrAuthentication, err)
	}
	sig, err := signTranscript(id.PrivateKey, clientTranscript(digest, id.Certificate))
	if err != nil {
		return nil, fmt.Errorf("%w: fsp: %v", post.ErrAuthentication, err)
	}
	cred := wire.Credential{Chain: id.Certificate, Sig: sig}
	if n := cred.Len(); n > maxFlightSize {
		return nil, post.Errorf(post.ErrNotSupported,
			"fsp: client certificate chain and signature take %d bytes; a handshake flight carries at most %d", n, maxFlightSize)
	}
	return wire.AppendCredential(nil, &cred)
}

// verifyCredential checks a peer's chain with VerifyPeer and its
// signature over digest with the leaf's key. server says whether this
// end is the listener (checking a client).
func verifyCredential(s *psi.Security, cred *wire.Credential, digest []byte, server bool) ([]*x509.Certificate, error) {
	who := "server"
	if server {
		who = "client"
	}
	if len(cred.Chain) == 0 {
		return nil, post.Errorf(post.ErrAuthentication, "fsp: %s sent no certificate", who)
	}
	certs := make([]*x509.Certificate, 0, len(cred.Chain))
	for _, der := range cred.Chain {
		// The certificates outlive the packet buffer, which is reused.
		c, err := x509.ParseCertificate(bytes.Clone(der))
		if err != nil {
			return nil, fmt.Errorf("%w: fsp: bad %s certificate: %v", post.ErrAuthentication, who, err)
		}
		certs = append(certs, c)
	}
	if err := s.VerifyPeer(certs, server); err != nil {
		return nil, fmt.Errorf("fsp: %s: %w", who, err)
	}
	if !verifyTranscript(certs[0].PublicKey, digest, cred.Sig) {
		return nil, post.Errorf(post.ErrAuthentication, "fsp: bad %s transcript signature", who)
	}
	return certs, nil
}

// refuse answers an INIT_CONNECT whose tag failed under the listener's
// key with a RESET carrying wire.ResetAuthentication, tagged under
// RefusalKey(nonce) and smaller than the request, so a client with the
// wrong PSK learns at once.
func (t *Transport) refuse(from *peerAddr, pkt *wire.Packet) {
	nonce := pkt.Payload[:fcrypto.NonceLen]
	p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: pkt.Src}}
	var arr [wire.HeaderLen + 1 + fcrypto.TagLen]byte
	t.write(handshakePacket(arr[:0], fcrypto.RefusalKey(nonce), &p, []byte{wire.ResetAuthentication}), from)
}
