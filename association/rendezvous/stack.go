package rendezvous

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// PeerAddrPort is PeerAddr as a netip.AddrPort.
func (s *Session) PeerAddrPort() netip.AddrPort {
	if u, ok := s.PeerAddr.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(s.PeerAddr.String())
	return ap
}

// Path describes the session's path for a carrier: the local and remote
// addresses of the selected candidate pair. For a relayed pair the local
// address is the relay's.
func (s *Session) Path() post.Path {
	return post.Path{Local: s.Local.Addr, Remote: s.Remote.Addr, Active: true}
}

// Establish runs stack over the session's path, the stack named by
// s.Stack: the controlling side dials the peer (psi.PacketDialer), the
// other accepts one transient (psi.PacketListener). Both ends
// authenticate each other by key (Security), whatever cfg.Security says
// otherwise, and the identity the stack verified is checked again
// (CheckPeer). The transient holds the path: the session closes once the
// stack is done with it. Call Establish once; if it fails the session is
// closed.
//
// Errors wrap post.ErrAuthentication when the peer is not who its ID
// says, on both sides (the listening side learns it from its listener's
// Refused channel, which FSP and QUIC have); a listening side that hears
// from nobody fails with post.ErrTimeout after the handshake timeout.
func (s *Session) Establish(ctx context.Context, stack psi.Stack, cfg *psi.Config) (psi.Transient, error) {
	t, err := s.establish(ctx, stack, cfg)
	if err != nil {
		s.Close()
		return nil, err
	}
	return t, nil
}

func (s *Session) establish(ctx context.Context, stack psi.Stack, cfg *psi.Config) (psi.Transient, error) {
	switch {
	case stack == nil || stack.Name() != s.Stack:
		return nil, post.Errorf(post.ErrPolicyConflict, "p2p: the peers agreed on stack %q, not this one", s.Stack)
	case !RunsOverPath(stack):
		return nil, post.Errorf(post.ErrNotSupported, "p2p: stack %s cannot run over a path it did not open", stack.Name())
	}
	var c psi.Config
	if cfg != nil {
		c = *cfg
	}
	c.Security = s.Security(c.Security)
	c.Local = netip.AddrPort{}
	pc := &pathConn{PacketConn: s.Conn, s: s}
	var (
		t   psi.Transient
		err error
	)
	if s.Controlling {
		t, err = stack.(psi.PacketDialer).DialPacket(ctx, pc, s.PeerAddr, &c)
	} else {
		var ln psi.Listener
		ln, err = stack.(psi.PacketListener).ListenPacket(ctx, pc, &c)
		if err != nil {
			return nil, err
		}
		// Closing the listener leaves the accepted transient, which
		// holds the path, open.
		t, err = s.acceptPeer(ctx, ln, c.Handshake())
		ln.Close()
	}
	if err != nil {
		return nil, err
	}
	// The handshake checked the pin; check again that it was this
	// peer's, whichever side this is.
	if err := s.CheckPeer(peerChain(t)); err != nil {
		psi.Abort(t, err)
		return nil, err
	}
	return t, nil
}

// RunsOverPath reports whether stack can run over a session's path: it
// dials and listens on a net.PacketConn someone else provides.
func RunsOverPath(stack psi.Stack) bool {
	_, d := stack.(psi.PacketDialer)
	_, l := stack.(psi.PacketListener)
	return d && l
}

// pathConn is the session's path as a stack holds it: closing it closes
// the session.
type pathConn struct {
	net.PacketConn
	s    *Session
	once sync.Once
}

// SetReadBuffer and SetWriteBuffer do nothing: the ICE agent buffers the
// path. quic-go asks for them, and warns on a conn without them.
func (c *pathConn) SetReadBuffer(int) error  { return nil }
func (c *pathConn) SetWriteBuffer(int) error { return nil }

func (c *pathConn) Close() error {
	c.once.Do(func() { c.s.Close() })
	return nil
}

// acceptPeer accepts the peer's transient on the listening side. The
// stack's handshake refuses a dialer without the pinned key without
// handing it to Accept, so the wait is bounded: the peer has just proved
// it can reach this end through ICE, and dials at once. A listener that
// reports refusals ends the wait at the first: nobody else comes over
// this path.
func (s *Session) acceptPeer(ctx context.Context, ln psi.Listener, timeout time.Duration) (psi.Transient, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var refused <-chan error // nil: never ready
	if r, ok := ln.(interface{ Refused() <-chan error }); ok {
		refused = r.Refused()
	}
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
		if a.err != nil && ctx.Err() == nil && actx.Err() != nil {
			return nil, post.Errorf(post.ErrTimeout, "p2p: peer %s completed no authenticated handshake within %v", s.Peer, timeout)
		}
		return a.t, a.err
	case rerr := <-refused:
		cancel()
		if a := <-ch; a.t != nil {
			a.t.Close()
		}
		return nil, fmt.Errorf("p2p: peer %s: %w", s.Peer, rerr)
	}
}

// peerChain returns the certificate chain t's peer presented and the
// stack verified, if the stack can tell.
func peerChain(t psi.Transient) []*x509.Certificate {
	if id, ok := psi.PeerIdentityOf(t); ok && id.Verified {
		return id.Chain
	}
	return nil
}
