package association

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// peerChain returns the certificate chain t's peer presented and the
// stack verified, if the stack can tell.
func peerChain(t psi.Transient) []*x509.Certificate {
	if id, ok := psi.PeerIdentityOf(t); ok && id.Verified {
		return id.Chain
	}
	return nil
}

// proveP2P runs on the dialling side: it checks that the listener showed
// the key of the peer's ID (the stack's handshake has already checked it
// against the pin), then proves this side's key in the first message.
func proveP2P(ctx context.Context, t psi.Transient, sess *rendezvous.Session) error {
	if err := sess.CheckPeer(peerChain(t)); err != nil {
		return err
	}
	return t.WriteMessage(ctx, sess.Proof(), true, nil)
}

// checkP2P runs on the listening side: a client certificate, if the stack
// verified one, must carry the key of the peer's ID, and the dialer's
// first message must prove that key, within the handshake timeout. (The
// proof stays while some stacks cannot authenticate clients in their
// handshake.)
func checkP2P(ctx context.Context, t psi.Transient, sess *rendezvous.Session, timeout time.Duration) error {
	if chain := peerChain(t); chain != nil {
		if err := sess.CheckPeer(chain); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	buf := make([]byte, rendezvous.ProofSize+1)
	n := 0
	for n < len(buf) {
		m, end, err := t.ReadMessage(ctx, buf[n:])
		if err != nil {
			if ctx.Err() != nil {
				return post.Errorf(post.ErrAuthentication, "p2p: peer %s sent no proof of its key within %v", sess.Peer, timeout)
			}
			return post.Errorf(post.ErrAuthentication, "p2p: reading the proof of peer %s: %v", sess.Peer, err)
		}
		n += m
		if end {
			return sess.CheckProof(buf[:n])
		}
	}
	return sess.CheckProof(buf[:n]) // too long: refused
}
