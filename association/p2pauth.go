package association

import (
	"context"
	"crypto/x509"
	"fmt"
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

// acceptPeer accepts the peer's transient on the listening side of a
// peer-to-peer path. The stack's handshake refuses a dialer without the
// pinned key without handing it to Accept, so the wait is bounded: the
// peer has just proved it can reach this end through ICE, and dials at
// once. A listener that reports refusals (FSP's) ends the wait at the
// first: nobody else comes over this path.
func acceptPeer(ctx context.Context, ln psi.Listener, sess *rendezvous.Session, timeout time.Duration) (psi.Transient, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		t   psi.Transient
		err error
	)
	if r, ok := ln.(interface{ Refused() <-chan error }); ok {
		type accepted struct {
			t   psi.Transient
			err error
		}
		ch := make(chan accepted, 1)
		go func() {
			t, err := ln.Accept(actx)
			ch <- accepted{t, err}
		}()
		select {
		case a := <-ch:
			t, err = a.t, a.err
		case rerr := <-r.Refused():
			cancel()
			if a := <-ch; a.t != nil {
				a.t.Close()
			}
			return nil, fmt.Errorf("p2p: peer %s: %w", sess.Peer, rerr)
		}
	} else {
		t, err = ln.Accept(actx)
	}
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return nil, post.Errorf(post.ErrTimeout, "p2p: peer %s completed no authenticated handshake within %v", sess.Peer, timeout)
	}
	return t, err
}
