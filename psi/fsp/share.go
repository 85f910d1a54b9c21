package fsp

import (
	"context"
	"net"
	"net/netip"

	"github.com/postsockets/postsockets/psi"
)

var _ psi.PacketSharer = (*Stack)(nil)

// ListenShared listens like Listen and also returns the datagrams that are
// not FSP's (QUIC's, for one: their first octet has bit 0x40 set, FSP's is
// zero) as a net.PacketConn on the same socket.
func (s *Stack) ListenShared(ctx context.Context, local netip.AddrPort, pc *psi.Config) (psi.Listener, net.PacketConn, error) {
	cfg := s.config(pc)
	if s.Transport != nil {
		l, err := s.Transport.Listen(cfg)
		if err != nil {
			return nil, nil, err
		}
		return &listener{l}, s.Transport.NonFSPConn(), nil
	}
	l, err := Listen(local, cfg)
	if err != nil {
		return nil, nil, err
	}
	return &listener{l}, l.Transport().NonFSPConn(), nil
}
