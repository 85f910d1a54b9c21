package rendezvous

import (
	"context"

	"github.com/postsockets/postsockets/psi/fsp"
)

// FSP runs an FSP connection over the session's path: the controlling
// side dials the peer, the other side accepts one connection. cfg should
// authenticate the peer (Security.PSK or PinnedKeys), since the rendezvous
// server does not. The FSP transport belongs to the session: Close the
// session after the connection.
func (s *Session) FSP(ctx context.Context, cfg *fsp.Config) (*fsp.Conn, error) {
	s.mu.Lock()
	if s.transport == nil {
		s.transport = &fsp.Transport{Conn: s.Conn}
		if cfg != nil {
			s.transport.Logger = cfg.Logger
		}
	}
	t := s.transport
	s.mu.Unlock()
	if s.Controlling {
		return t.Dial(ctx, s.PeerAddr, cfg)
	}
	l, err := t.Listen(cfg)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return l.Accept(ctx)
}
