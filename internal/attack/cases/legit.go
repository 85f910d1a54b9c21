package cases

import (
	"net/netip"
	"sync/atomic"
)

// legitDials numbers the legitimate client's dials for legitLocal.
var legitDials atomic.Uint32

// legitLocal returns the local address of the legitimate client's next
// QUIC dial: a new address each time, in the attacker's /24 (127.0.0.3
// to 127.0.0.252). A QUIC listener refuses a ninth handshake in progress
// from one address (Stack.MaxHandshakesPerSource): the client's own
// dials, ten a second from 127.0.0.1, held eight once a loaded host
// under the race detector slowed each past 800 ms, and the listener
// refused the next with CONNECTION_REFUSED, by design and whatever the
// attacker did. The rows measure what the attacker costs the client.
func legitLocal() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(3 + legitDials.Add(1)%250)}), 0)
}
