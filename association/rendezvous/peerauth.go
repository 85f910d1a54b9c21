package rendezvous

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Security returns base set up to authenticate the session's peer end to
// end, whichever side listens: this side presents its Key, only the
// peer's key is accepted, and a listener requires the dialer's
// certificate. A PSK, CA roots and InsecureSkipVerify in base do not
// apply: a peer is its key.
func (s *Session) Security(base psi.Security) psi.Security {
	sec := base
	sec.Certificates = []tls.Certificate{s.key.Certificate}
	sec.PinnedKeys = []psi.Pin{s.peerPin}
	sec.PSK = nil
	sec.RootCAs = nil
	sec.ServerName = ""
	sec.ClientAuth = true
	sec.InsecureSkipVerify = false
	return sec
}

// CheckPeer checks a certificate chain the peer presented: its key must be
// the one the peer's ID names. Errors wrap post.ErrAuthentication.
func (s *Session) CheckPeer(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return post.Errorf(post.ErrAuthentication, "p2p: peer %s presented no key", s.Peer)
	}
	if got := psi.PinCertificate(chain[0]); got != s.peerPin {
		return post.Errorf(post.ErrAuthentication, "p2p: peer %s presented the key of %s", s.Peer, IDFromPin(got))
	}
	return nil
}

// The dialling side proves its key to the listening side in the first
// message over the connection, until every stack authenticates clients in
// its handshake. The proof is ProofSize bytes: a magic, the dialer's
// Ed25519 public key and its signature over proofContext, both IDs and
// both ICE username fragments. The listener's fragment is fresh, so a
// proof is never valid twice; the listener's ID is the one whose key the
// dialer verified in the handshake, so a proof cannot be relayed to
// another listener.
const (
	proofMagic   = "PSP1"
	proofContext = "postsockets p2p dialer proof v1\x00"
	// ProofSize is the size of a dialer's proof message.
	ProofSize = len(proofMagic) + ed25519.PublicKeySize + ed25519.SignatureSize
)

func proofData(dialer, listener PeerID, dialerUfrag, listenerUfrag string) []byte {
	d := []byte(proofContext)
	for _, f := range []string{string(dialer), string(listener), dialerUfrag, listenerUfrag} {
		d = append(d, f...)
		d = append(d, 0)
	}
	return d
}

// Proof returns the message the dialling (controlling) side sends first.
func (s *Session) Proof() []byte {
	sig := ed25519.Sign(s.key.Private, proofData(s.Self, s.Peer, s.localUfrag, s.remoteUfrag))
	p := append([]byte(proofMagic), s.key.Private.Public().(ed25519.PublicKey)...)
	return append(p, sig...)
}

// CheckProof checks the dialer's first message on the listening side.
// Errors wrap post.ErrAuthentication.
func (s *Session) CheckProof(p []byte) error {
	if len(p) != ProofSize || string(p[:len(proofMagic)]) != proofMagic {
		return post.Errorf(post.ErrAuthentication, "p2p: peer %s sent no proof of its key", s.Peer)
	}
	pub := ed25519.PublicKey(p[len(proofMagic) : len(proofMagic)+ed25519.PublicKeySize])
	id, err := IDFromPublicKey(pub)
	if err != nil || id != s.Peer {
		return post.Errorf(post.ErrAuthentication, "p2p: the dialer proved the key of %s, not of %s", id, s.Peer)
	}
	if !ed25519.Verify(pub, proofData(s.Peer, s.Self, s.remoteUfrag, s.localUfrag), p[len(proofMagic)+ed25519.PublicKeySize:]) {
		return post.Errorf(post.ErrAuthentication, "p2p: bad proof from peer %s", s.Peer)
	}
	return nil
}
