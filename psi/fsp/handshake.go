package fsp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// The handshake:
//
//	INIT_CONNECT      client nonce
//	ACK_INIT_CONNECT  cookie = timestamp | MAC(listener secret, client address, ALFID, nonce, timestamp)
//	CONNECT_REQUEST   cookie | client nonce; EPHEMERAL_KEY, CONNECT_PARAM
//	ACK_CONNECT_REQ   server nonce | certificate chain | signature | key confirmation;
//	                  EPHEMERAL_KEY, CONNECT_PARAM
//
// All four carry a truncated HMAC-SHA256 tag under HandshakeKey(PSK,
// client ALFID). The signature covers the transcript below, so the
// ephemeral keys cannot be swapped; the confirmation MAC proves the server
// derived the same master secret (it matters with a PSK).

// transcript hashes everything both ends contributed.
func transcript(clientALFID, serverALFID uint32, cNonce, sNonce, cPub, sPub []byte,
	cParam, sParam *wire.ConnectParam, chain [][]byte) []byte {
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
	for _, c := range chain {
		binary.BigEndian.PutUint32(b[:], uint32(len(c)))
		h.Write(b[:4])
		h.Write(c)
	}
	return h.Sum(nil)
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
	chain   [][]byte
	sig     []byte
	confirm []byte
}

func (h *serverHello) append(b []byte) []byte {
	b = append(b, h.nonce...)
	b = append(b, byte(len(h.chain)))
	for _, c := range h.chain {
		b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
		b = append(b, c...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.sig)))
	b = append(b, h.sig...)
	return append(b, h.confirm...)
}

func parseServerHello(b []byte) (*serverHello, error) {
	bad := post.Errorf(post.ErrMalformed, "fsp: bad ACK_CONNECT_REQ")
	h := new(serverHello)
	if len(b) < fcrypto.NonceLen+1 {
		return nil, bad
	}
	h.nonce, b = b[:fcrypto.NonceLen], b[fcrypto.NonceLen:]
	n := int(b[0])
	b = b[1:]
	for range n {
		if len(b) < 2 {
			return nil, bad
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return nil, bad
		}
		h.chain = append(h.chain, b[2:2+l])
		b = b[2+l:]
	}
	if len(b) < 2 {
		return nil, bad
	}
	l := int(binary.BigEndian.Uint16(b))
	if len(b) != 2+l+fcrypto.TagLen {
		return nil, bad
	}
	h.sig, h.confirm = b[2:2+l], b[2+l:]
	return h, nil
}

// identity resolves the certificate a listener presents: the configured
// one, the PSK-derived one, or a fresh self-signed Ed25519 certificate
// (clients then need a pin or InsecureSkipVerify).
func identity(cfg *Config) (*tls.Certificate, error) {
	if len(cfg.Security.Certificates) > 0 || len(cfg.Security.PSK) > 0 {
		return cfg.Security.Identity()
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fsp-ephemeral"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}

// verifyServer checks the server's chain and transcript signature.
func verifyServer(cfg *Config, h *serverHello, digest []byte) error {
	if len(h.chain) == 0 {
		return post.Errorf(post.ErrAuthentication, "fsp: server sent no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(h.chain))
	for _, der := range h.chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("%w: fsp: bad server certificate: %v", post.ErrAuthentication, err)
		}
		certs = append(certs, c)
	}
	if err := cfg.Security.VerifyPeer(certs, false); err != nil {
		return err
	}
	if !verifyTranscript(certs[0].PublicKey, digest, h.sig) {
		return post.Errorf(post.ErrAuthentication, "fsp: bad transcript signature")
	}
	return nil
}
