package quic

import (
	"context"
	"net"
	"net/netip"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

var _ psi.PacketListener = (*Stack)(nil)

// ListenPacket listens on pc, a socket shared with another stack (see
// psi.PacketSharer). The listener and the connections it accepts hold pc,
// and the last of them to close closes it, which for a shared socket
// releases this stack's claim on it.
func (s *Stack) ListenPacket(ctx context.Context, pc net.PacketConn, cfg *psi.Config) (psi.Listener, error) {
	st := s.over(pc)
	local, _ := netip.ParseAddrPort(pc.LocalAddr().String())
	return st.Listen(ctx, local, cfg)
}

var _ psi.PacketDialer = (*Stack)(nil)

// DialPacket dials remote over pc, such as the pair ICE selected
// (psi.PacketDialer). pc need not be a *net.UDPConn: quic-go then does
// without ECN, GSO and path MTU probing. The connection and its forks hold
// pc; the last of them to close closes it. If DialPacket fails, pc is
// closed.
func (s *Stack) DialPacket(ctx context.Context, pc net.PacketConn, remote net.Addr, cfg *psi.Config) (psi.Transient, error) {
	ap, _ := netip.ParseAddrPort(remote.String())
	if u, ok := remote.(*net.UDPAddr); ok {
		ap = u.AddrPort()
	}
	if cfg == nil {
		cfg = &psi.Config{}
	}
	if _, err := tlsConfig(cfg, false, ap); err != nil {
		pc.Close()
		return nil, &post.OpError{Op: "dial", Stack: Name, Path: remote.String(), Err: err}
	}
	t, err := s.over(pc).dial(ctx, ap, remote, cfg)
	if err != nil {
		return nil, &post.OpError{Op: "dial", Stack: Name, Path: remote.String(), Err: err}
	}
	return t, nil
}

// over returns a copy of s's settings that runs over pc and shares s's
// address tokens.
func (s *Stack) over(pc net.PacketConn) *Stack {
	st := &Stack{
		PacketConn:             func(netip.AddrPort) (net.PacketConn, error) { return pc, nil },
		MaxHandshakes:          s.MaxHandshakes,
		MaxHandshakesPerSource: s.MaxHandshakesPerSource,
		MaxHandshakeRate:       s.MaxHandshakeRate,
		MaxConnsPerSource:      s.MaxConnsPerSource,
		MaxStreams:             s.MaxStreams,
		tokens:                 s.tokenStore(false),
	}
	st.tokensOnce.Do(func() {})
	return st
}
