package rendezvous

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/fsp"
)

// Transport returns the FSP transport over the session's path, made on
// first use. It belongs to the session: Close closes it. Use it as
// fsp.Stack{Transport: s.Transport()} to run psi transients over the path,
// dialling PeerAddrPort on the controlling side and listening on the
// other.
func (s *Session) Transport() *fsp.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transport == nil {
		s.transport = &fsp.Transport{Conn: s.Conn}
	}
	return s.transport
}

// PeerAddrPort is PeerAddr as a netip.AddrPort.
func (s *Session) PeerAddrPort() netip.AddrPort {
	if u, ok := s.PeerAddr.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(s.PeerAddr.String())
	return ap
}

// FSP runs an FSP connection over the session's path: the controlling
// side dials the peer, the other side accepts one connection. Both ends
// authenticate each other by key (Security), whatever cfg.Security says
// otherwise. The FSP transport belongs to the session: Close the session
// after the connection. Errors wrap post.ErrAuthentication when the peer
// is not who its ID says, on both sides (the listening side learns it from
// fsp.Listener.Refused); a listening side that hears from nobody fails
// with post.ErrTimeout after the handshake timeout.
func (s *Session) FSP(ctx context.Context, cfg *fsp.Config) (*fsp.Conn, error) {
	c := *cfg
	c.Security = s.Security(cfg.Security)
	t := s.Transport()
	var conn *fsp.Conn
	if s.Controlling {
		var err error
		if conn, err = t.Dial(ctx, s.PeerAddr, &c); err != nil {
			return nil, err
		}
	} else {
		l, err := t.Listen(&c)
		if err != nil {
			return nil, err
		}
		defer l.Close()
		// The peer dials as soon as ICE completes; a dialler the
		// handshake refuses never reaches Accept.
		timeout := c.HandshakeTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		type accepted struct {
			c   *fsp.Conn
			err error
		}
		ch := make(chan accepted, 1)
		go func() {
			c, err := l.Accept(actx)
			ch <- accepted{c, err}
		}()
		select {
		case a := <-ch:
			conn, err = a.c, a.err
		case rerr := <-l.Refused():
			// Nobody but the peer comes over this path.
			cancel()
			if a := <-ch; a.c != nil {
				a.c.Close()
			}
			return nil, fmt.Errorf("p2p: peer %s: %w", s.Peer, rerr)
		}
		if err != nil {
			if ctx.Err() == nil && actx.Err() != nil {
				return nil, post.Errorf(post.ErrTimeout, "p2p: peer %s completed no authenticated handshake within %v", s.Peer, timeout)
			}
			return nil, err
		}
	}
	if err := s.CheckPeer(conn.PeerCertificates()); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Path describes the session's path for a carrier: the local and remote
// addresses of the selected candidate pair. For a relayed pair the local
// address is the relay's.
func (s *Session) Path() post.Path {
	return post.Path{Local: s.Local.Addr, Remote: s.Remote.Addr, Active: true}
}
