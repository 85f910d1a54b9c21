package psi

import (
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"time"

	"golang.org/x/crypto/hkdf"

	"github.com/postsockets/postsockets/post"
)

// Pin is the SHA-256 digest of a DER-encoded SubjectPublicKeyInfo.
type Pin [32]byte

// PinKey returns the pin of a public key.
func PinKey(pub crypto.PublicKey) (Pin, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Pin{}, err
	}
	return sha256.Sum256(der), nil
}

// PinCertificate returns the pin of a certificate's public key.
func PinCertificate(c *x509.Certificate) Pin { return sha256.Sum256(c.RawSubjectPublicKeyInfo) }

func (p Pin) String() string { return hex.EncodeToString(p[:]) }

// Security is the trust configuration of an Association, shared by all
// stacks.
type Security struct {
	// Certificates identify this end. A listener needs one unless PSK is set.
	Certificates []tls.Certificate
	// RootCAs verify the peer's chain; nil means the system roots.
	RootCAs *x509.CertPool
	// ServerName is the name checked in the server's certificate.
	ServerName string
	// PinnedKeys, if set, are the only peer keys accepted, and replace
	// chain verification. A listener checks clients only with ClientAuth
	// (or a PSK): without it, a client presenting no key is accepted.
	PinnedKeys []Pin
	// PSK is a pre-shared key. It authenticates both ends, and is used
	// alone: with Certificates, PinnedKeys, RootCAs or InsecureSkipVerify
	// it is refused (Check).
	PSK []byte
	// ClientAuth makes a listener require and verify a client certificate
	// (against PinnedKeys, or else RootCAs).
	ClientAuth bool
	// InsecureSkipVerify disables peer authentication; for tests only.
	InsecureSkipVerify bool
	// SessionCache holds TLS resumption state for the Association.
	SessionCache tls.ClientSessionCache
	// NextProtos is the ALPN list for TLS-based stacks.
	NextProtos []string
}

// VerifyPeer checks a peer's certificate chain against s. It is used by
// stacks that authenticate without crypto/tls, and by TLSConfig.
func (s *Security) VerifyPeer(chain []*x509.Certificate, server bool) error {
	if s.InsecureSkipVerify {
		return nil
	}
	if len(chain) == 0 {
		return post.Errorf(post.ErrAuthentication, "peer sent no certificate")
	}
	if len(s.PinnedKeys) > 0 || len(s.PSK) > 0 {
		pins := s.PinnedKeys
		if len(s.PSK) > 0 {
			pin, err := PSKPin(s.PSK)
			if err != nil {
				return err
			}
			pins = append(append([]Pin(nil), pins...), pin)
		}
		got := PinCertificate(chain[0])
		for _, p := range pins {
			if p == got {
				return nil
			}
		}
		return post.Errorf(post.ErrAuthentication, "peer key %s is not pinned", got)
	}
	opts := x509.VerifyOptions{Roots: s.RootCAs, Intermediates: x509.NewCertPool()}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if server {
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		opts.DNSName = s.ServerName
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return fmt.Errorf("%w: %v", post.ErrAuthentication, err)
	}
	return nil
}

// Identity returns the certificate this end presents: the first configured
// one, or one derived from the PSK.
func (s *Security) Identity() (*tls.Certificate, error) {
	if len(s.Certificates) > 0 {
		c := s.Certificates[0]
		if c.Leaf == nil && len(c.Certificate) > 0 {
			leaf, err := x509.ParseCertificate(c.Certificate[0])
			if err != nil {
				return nil, err
			}
			c.Leaf = leaf
		}
		return &c, nil
	}
	if len(s.PSK) > 0 {
		return PSKCertificate(s.PSK)
	}
	return nil, post.Errorf(post.ErrAuthentication, "no certificate or PSK to prove who this end is: set Security.Certificates or Security.PSK")
}

// Check rejects settings whose meaning would differ by stack. A PSK is a
// whole trust configuration: it identifies both ends. Combined with
// Certificates, PinnedKeys or RootCAs it is ambiguous (FSP keys its
// handshake with the PSK, so it would need the PSK and a certificate,
// while TLS can only take the PSK as one more pinned key, the PSK or a
// certificate), so every stack refuses it with post.ErrInvalid.
func (s *Security) Check() error {
	if len(s.PSK) == 0 {
		return nil
	}
	if len(s.Certificates) > 0 || len(s.PinnedKeys) > 0 || s.RootCAs != nil || s.InsecureSkipVerify {
		return post.Errorf(post.ErrInvalid,
			"Security.PSK cannot be combined with Certificates, PinnedKeys, RootCAs or InsecureSkipVerify: use a PSK alone, or certificates and pins")
	}
	if len(s.PSK) < 16 {
		return post.Errorf(post.ErrInvalid, "Security.PSK is shorter than 16 bytes")
	}
	return nil
}

// ForDial returns s for a dial to remote: when s verifies the listener's
// chain (no PSK, pins or InsecureSkipVerify) and names no server, the
// name checked is remote's IP address. Every stack dials with it, so a
// Remote given by addresses alone refuses a chain issued for another
// name on each.
func (s Security) ForDial(remote netip.Addr) Security {
	if s.ServerName == "" && !s.InsecureSkipVerify && len(s.PinnedKeys) == 0 && len(s.PSK) == 0 && remote.IsValid() {
		s.ServerName = remote.Unmap().String()
	}
	return s
}

// ClientCertRequired reports whether a listener with these settings
// requires and verifies a client certificate: with ClientAuth, and with a
// PSK (the client then proves it holds the PSK-derived key). Every stack
// follows it.
func (s *Security) ClientCertRequired() bool { return s.ClientAuth || len(s.PSK) > 0 }

// TLSConfig builds a crypto/tls configuration from s.
func (s *Security) TLSConfig(server bool) (*tls.Config, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         s.NextProtos,
		ServerName:         s.ServerName,
		ClientSessionCache: s.SessionCache,
		// Verification is done in VerifyConnection so pins, PSK-derived
		// keys and chains share one code path.
		InsecureSkipVerify: true,
	}
	if server || len(s.Certificates) > 0 || len(s.PSK) > 0 {
		id, err := s.Identity()
		if err != nil {
			if server {
				return nil, err
			}
		} else {
			cfg.Certificates = []tls.Certificate{*id}
		}
	}
	if server && s.ClientCertRequired() {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if server && cfg.ClientAuth == tls.NoClientCert {
			return nil
		}
		return s.VerifyPeer(cs.PeerCertificates, server)
	}
	return cfg, nil
}

// PSKCertificate derives a deterministic Ed25519 self-signed certificate
// from a pre-shared key, so TLS-based stacks can authenticate with a PSK:
// both ends derive the same key and pin it.
func PSKCertificate(psk []byte) (*tls.Certificate, error) {
	priv, err := pskKey(psk)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "postsockets-psk"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"postsockets-psk"},
	}
	der, err := x509.CreateCertificate(zeroReader{}, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}

// pskKey derives the Ed25519 key of PSKCertificate.
func pskKey(psk []byte) (ed25519.PrivateKey, error) {
	if len(psk) < 16 {
		return nil, errors.New("psi: PSK shorter than 16 bytes")
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, psk, nil, []byte("postsockets psk identity")), seed); err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// PSKPin returns the pin of PSKCertificate(psk) without building the
// certificate, which costs several times more: verification and peer
// identities need only the pin.
func PSKPin(psk []byte) (Pin, error) {
	priv, err := pskKey(psk)
	if err != nil {
		return Pin{}, err
	}
	return PinKey(priv.Public())
}

// zeroReader makes certificate creation deterministic; Ed25519 signing
// does not consume randomness.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Identity is what a transient verified about its peer during the
// handshake. Forks, clones and resumed sessions carry the identity of the
// connection that made them.
type Identity struct {
	// Chain is the certificate chain the peer presented, leaf first; nil
	// if it presented none (a listener without ClientAuth or PSK does not
	// ask for one).
	Chain []*x509.Certificate
	// Pin is the pin of the leaf's public key; zero without a chain.
	Pin Pin
	// PSK reports that the peer's key is the one derived from the
	// configured PSK: it proved it holds the PSK.
	PSK bool
	// Verified reports that Chain passed VerifyPeer. It is false when
	// verification was skipped (InsecureSkipVerify, or a listener that
	// does not ask for client certificates).
	Verified bool
}

// Leaf returns the peer's end-entity certificate, or nil.
func (id Identity) Leaf() *x509.Certificate {
	if len(id.Chain) == 0 {
		return nil
	}
	return id.Chain[0]
}

// PeerIdentity builds the Identity of a peer whose chain a stack has
// accepted under s. server says whether this end is the listener. Every
// stack uses it, so identities mean the same on each.
func (s *Security) PeerIdentity(chain []*x509.Certificate, server bool) Identity {
	if len(chain) == 0 {
		return Identity{}
	}
	id := Identity{Chain: chain, Pin: PinCertificate(chain[0])}
	if len(s.PSK) > 0 {
		if pin, err := PSKPin(s.PSK); err == nil && pin == id.Pin {
			id.PSK = true
		}
	}
	id.Verified = !s.InsecureSkipVerify && (!server || s.ClientCertRequired())
	return id
}

// PeerIdentifier is implemented by transients that can tell what they
// verified about their peer. All built-in stacks implement it.
type PeerIdentifier interface {
	PeerIdentity() Identity
}

// PeerIdentityOf returns t's peer identity, and false if t cannot tell.
func PeerIdentityOf(t Transient) (Identity, bool) {
	if p, ok := t.(PeerIdentifier); ok {
		return p.PeerIdentity(), true
	}
	return Identity{}, false
}

// SecurityChecker is implemented by stacks that cannot give every
// guarantee a Security may ask for. CheckSecurity returns an error
// wrapping post.ErrNotSupported that says what is missing; a race leaves
// such a stack out (with a logged reason) rather than weaken the trust
// settings. server says whether s is for a listener.
type SecurityChecker interface {
	CheckSecurity(s *Security, server bool) error
}

// CheckStackSecurity reports whether st can honour s; stacks that do not
// implement SecurityChecker are taken to honour every setting.
func CheckStackSecurity(st Stack, s *Security, server bool) error {
	if c, ok := st.(SecurityChecker); ok {
		return c.CheckSecurity(s, server)
	}
	return nil
}
