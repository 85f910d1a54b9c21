package quic

import (
	"context"
	"net"
	"net/netip"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/psi"
)

var _ psi.PacketListener = (*Stack)(nil)

// ListenPacket listens on pc, a socket shared with another stack (see
// psi.PacketSharer). Closing the listener does not close pc; the quic-go
// Transport on it, which accepted connections keep using, ends when pc is
// closed by its owner.
func (s *Stack) ListenPacket(ctx context.Context, pc net.PacketConn, cfg *psi.Config) (psi.Listener, error) {
	tr := &quicgo.Transport{Conn: pc}
	st := &Stack{Transport: func(netip.AddrPort) (*quicgo.Transport, error) { return tr, nil }}
	local, _ := netip.ParseAddrPort(pc.LocalAddr().String())
	ln, err := st.Listen(ctx, local, cfg)
	if err != nil {
		tr.Close()
		return nil, err
	}
	return ln, nil
}
