package cases

import (
	"context"
	"net/netip"
	"sync/atomic"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/quic"
)

// legitDial returns a QUIC row's Dial for the legitimate client: each
// dial from a new local address in the attacker's /24 (127.0.0.3 to
// 127.0.0.252). A QUIC listener refuses a ninth handshake in progress
// from one address (Stack.MaxHandshakesPerSource): the client's own
// dials, ten a second from 127.0.0.1, held eight once a loaded host
// under the race detector slowed each past 800 ms, and the listener
// refused the next with CONNECTION_REFUSED, by design and whatever the
// attacker did. The rows measure what the attacker costs the client.
func legitDial(st *quic.Stack, to netip.AddrPort, base *psi.Config) func(context.Context) error {
	var n atomic.Uint32
	return func(ctx context.Context) error {
		cfg := *base
		cfg.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(3 + n.Add(1)%250)}), 0)
		t, err := st.Dial(ctx, to, &cfg)
		if err != nil {
			return err
		}
		go t.Close()
		return nil
	}
}
