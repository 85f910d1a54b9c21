package rendezvous

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Security returns base set up to authenticate the session's peer end to
// end in the handshake, whichever side listens: this side presents its
// Key, only the peer's key is accepted, and a listener requires the
// dialer's certificate (ClientAuth). A PSK, CA roots and InsecureSkipVerify in base do not
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

// CheckPeer checks the certificate chain the handshake verified for the
// peer, on either side: its key must be the one the peer's ID names, so a
// stack that dropped the pin or ClientAuth is caught. Errors wrap
// post.ErrAuthentication.
func (s *Session) CheckPeer(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return post.Errorf(post.ErrAuthentication, "p2p: peer %s presented no key", s.Peer)
	}
	if got := psi.PinCertificate(chain[0]); got != s.peerPin {
		return post.Errorf(post.ErrAuthentication, "p2p: peer %s presented the key of %s", s.Peer, IDFromPin(got))
	}
	return nil
}
