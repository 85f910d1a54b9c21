package rendezvous

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/pem"
	"math/big"
	"strings"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// PeerID names a peer by its public key, as go-libp2p's peer IDs do. It
// is "b" (the multibase prefix for lower-case base32) followed by the
// unpadded lower-case base32 of the multihash 0x12 0x20 || SHA-256(SPKI),
// where SPKI is the DER SubjectPublicKeyInfo of the key: 56 characters,
// such as "bciq...". The digest is exactly the key's psi.Pin, so a peer ID
// is a pin that can be written down, and a name cannot be claimed without
// the key.
type PeerID string

// peerIDLen is the length of a PeerID's text.
const peerIDLen = 1 + (2+32)*8/5 + 1 // 56

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// IDFromPin returns the peer ID of the key whose pin is p.
func IDFromPin(p psi.Pin) PeerID {
	mh := append([]byte{0x12, 0x20}, p[:]...)
	return PeerID("b" + strings.ToLower(b32.EncodeToString(mh)))
}

// IDFromPublicKey returns the peer ID of a public key.
func IDFromPublicKey(pub crypto.PublicKey) (PeerID, error) {
	p, err := psi.PinKey(pub)
	if err != nil {
		return "", err
	}
	return IDFromPin(p), nil
}

// IDFromCertificate returns the peer ID of a certificate's key.
func IDFromCertificate(c *x509.Certificate) PeerID { return IDFromPin(psi.PinCertificate(c)) }

// ParsePeerID checks that s is a well-formed peer ID. Errors wrap
// post.ErrMalformed.
func ParsePeerID(s string) (PeerID, error) {
	id := PeerID(s)
	if _, err := id.Pin(); err != nil {
		return "", err
	}
	return id, nil
}

// Pin returns the key pin the ID stands for.
func (id PeerID) Pin() (psi.Pin, error) {
	s := string(id)
	if len(s) != peerIDLen || s[0] != 'b' || strings.ToLower(s) != s {
		return psi.Pin{}, post.Errorf(post.ErrMalformed, "rendezvous: %.60q is not a peer ID", s)
	}
	mh, err := b32.DecodeString(strings.ToUpper(s[1:]))
	if err != nil || len(mh) != 34 || mh[0] != 0x12 || mh[1] != 0x20 {
		return psi.Pin{}, post.Errorf(post.ErrMalformed, "rendezvous: %.60q is not a peer ID", s)
	}
	var p psi.Pin
	copy(p[:], mh[2:])
	if IDFromPin(p) != id { // non-canonical trailing bits
		return psi.Pin{}, post.Errorf(post.ErrMalformed, "rendezvous: %.60q is not a peer ID", s)
	}
	return p, nil
}

func (id PeerID) String() string { return string(id) }

// Key is a peer's long-term identity: an Ed25519 key, the self-signed
// certificate that presents it in handshakes, and its peer ID.
type Key struct {
	Private     ed25519.PrivateKey
	Certificate tls.Certificate
	ID          PeerID
}

// GenerateKey makes a new random peer identity.
func GenerateKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return NewKey(priv)
}

// NewKey wraps an Ed25519 private key as a peer identity, with a
// self-signed certificate for it.
func NewKey(priv ed25519.PrivateKey) (*Key, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: bad Ed25519 private key")
	}
	pub := priv.Public()
	id, err := IDFromPublicKey(pub)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: string(id)},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Key{
		Private:     priv,
		Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf},
		ID:          id,
	}, nil
}

// KeyFromCertificate returns the peer identity of a certificate whose
// private key is Ed25519, such as psi.Security.Certificates[0]. Errors
// wrap post.ErrAuthentication.
func KeyFromCertificate(c tls.Certificate) (*Key, error) {
	priv, ok := c.PrivateKey.(ed25519.PrivateKey)
	if !ok || len(c.Certificate) == 0 {
		return nil, post.Errorf(post.ErrAuthentication, "rendezvous: a peer identity needs a certificate with an Ed25519 private key")
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, post.Errorf(post.ErrAuthentication, "rendezvous: %v", err)
		}
		c.Leaf = leaf
	}
	if !priv.Public().(ed25519.PublicKey).Equal(leaf.PublicKey) {
		return nil, post.Errorf(post.ErrAuthentication, "rendezvous: certificate and private key do not match")
	}
	return &Key{Private: priv, Certificate: c, ID: IDFromCertificate(leaf)}, nil
}

// MarshalPEM encodes the private key as a PKCS #8 "PRIVATE KEY" PEM block.
func (k *Key) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes a key written by MarshalPEM.
func ParseKeyPEM(data []byte) (*Key, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: no PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: %v", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: peer keys are Ed25519, got %T", k)
	}
	return NewKey(priv)
}
