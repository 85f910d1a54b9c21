package carrier

import "github.com/postsockets/postsockets/psi"

// Peer returns what the backing stack verified about the peer in its
// handshake: the certificate chain it presented, the pin of its key, and
// whether it proved the PSK. An application authorizes a Carrier from
// Accept by it. Every built-in stack reports it the same way; forks report
// their root's peer. A dormant Carrier returns the zero Identity, and so,
// until the handshake completes, does a 0-RTT Carrier from Initiate, and
// one a QUIC listener accepted with 0-RTT data (an FSP listener has the
// client's identity from its ticket at once).
func (c *Carrier) Peer() psi.Identity {
	id, _ := psi.PeerIdentityOf(c.transient())
	return id
}

// Peer returns the wrapped Carrier's verified peer identity.
func (n *Conn) Peer() psi.Identity { return n.c.Peer() }

// Peer returns the verified identity of the Source's peer; for a
// Responder's Request.Reply, that of the peer that sent the request.
func (s *Source) Peer() psi.Identity { return s.c.Peer() }
