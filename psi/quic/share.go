package quic

import (
	"context"
	"net"
	"net/netip"

	"github.com/postsockets/postsockets/psi"
)

var _ psi.PacketListener = (*Stack)(nil)

// ListenPacket listens on pc, a socket shared with another stack (see
// psi.PacketSharer). The listener and the connections it accepts hold pc,
// and the last of them to close closes it, which for a shared socket
// releases this stack's claim on it.
func (s *Stack) ListenPacket(ctx context.Context, pc net.PacketConn, cfg *psi.Config) (psi.Listener, error) {
	st := &Stack{PacketConn: func(netip.AddrPort) (net.PacketConn, error) { return pc, nil }}
	local, _ := netip.ParseAddrPort(pc.LocalAddr().String())
	return st.Listen(ctx, local, cfg)
}
