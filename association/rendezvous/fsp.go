package rendezvous

import (
	"context"
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
// otherwise; the dialer proves its key in its first message. The FSP
// transport belongs to the session: Close the session after the
// connection. Errors wrap post.ErrAuthentication when the peer is not who
// its ID says.
func (s *Session) FSP(ctx context.Context, cfg *fsp.Config) (*fsp.Conn, error) {
	c := *cfg
	c.Security = s.Security(cfg.Security)
	t := s.Transport()
	if s.Controlling {
		conn, err := t.Dial(ctx, s.PeerAddr, &c)
		if err != nil {
			return nil, err
		}
		if err := s.CheckPeer(conn.PeerCertificates()); err != nil {
			conn.Close()
			return nil, err
		}
		if err := conn.SendMessage(ctx, s.Proof()); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
	l, err := t.Listen(&c)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	conn, err := l.Accept(ctx)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, proofTimeout(c.HandshakeTimeout))
	defer cancel()
	p, err := conn.ReceiveMessage(pctx)
	if err == nil {
		err = s.CheckProof(p)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// proofTimeout bounds the wait for the dialer's proof.
func proofTimeout(handshake time.Duration) time.Duration {
	if handshake > 0 {
		return handshake
	}
	return 10 * time.Second
}

// Path describes the session's path for a carrier: the local and remote
// addresses of the selected candidate pair. For a relayed pair the local
// address is the relay's.
func (s *Session) Path() post.Path {
	return post.Path{Local: s.Local.Addr, Remote: s.Remote.Addr, Active: true}
}
