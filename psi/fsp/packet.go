package fsp

import (
	"context"
	"net"

	"github.com/postsockets/postsockets/psi"
)

var (
	_ psi.PacketListener = (*Stack)(nil)
	_ psi.PacketDialer   = (*Stack)(nil)
)

// ListenPacket listens on pc, a socket or path someone else provides
// (psi.PacketListener). The listener and the connections it accepted hold
// pc; the last of them to close closes it. If ListenPacket fails, pc is
// closed.
func (s *Stack) ListenPacket(ctx context.Context, pc net.PacketConn, c *psi.Config) (psi.Listener, error) {
	cfg := s.config(c)
	t := &Transport{Conn: pc, owned: true, Logger: cfg.Logger}
	if err := ctx.Err(); err != nil {
		pc.Close()
		return nil, err
	}
	l, err := t.Listen(cfg)
	if err != nil {
		t.Close()
		return nil, err
	}
	t.mu.Lock()
	l.ownsTransport = true
	t.mu.Unlock()
	return &listener{l}, nil
}

// DialPacket dials remote over pc (psi.PacketDialer). The connection and
// its forks hold pc; the last of them to close closes it.
func (s *Stack) DialPacket(ctx context.Context, pc net.PacketConn, remote net.Addr, c *psi.Config) (psi.Transient, error) {
	cfg := s.config(c)
	t := &Transport{Conn: pc, owned: true, closeWhenIdle: true, Logger: cfg.Logger}
	conn, err := t.Dial(ctx, remote, cfg)
	if err != nil {
		t.Close()
		return nil, err
	}
	return &transient{c: conn, assoc: cfg.Association}, nil
}
