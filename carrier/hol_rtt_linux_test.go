//go:build linux

package carrier_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netns"
)

// The veth path of BenchmarkHeadOfLine has no delay, so it measures loss
// recovery at microsecond round trips. Here the two namespaces are joined
// instead by a TUN device in each and a user-space delay line between
// them that holds every IP packet for a fixed one-way delay, TCP and UDP
// alike (kernel TCP sees the real round trip, unlike through a TCP relay);
// nftables drops 2% each way as before.

const holOneWay = 10 * time.Millisecond // round trip 20 ms

var (
	holTunSrv = netip.MustParseAddr("10.202.0.1")
	holTunCli = netip.MustParseAddr("10.202.0.2")
)

// newHolTunNet is newHolNet with a delay line instead of a veth pair.
func newHolTunNet(tb testing.TB, oneWay time.Duration) *holNet {
	tb.Helper()
	if err := netns.Available(); err != nil {
		tb.Skipf("head-of-line measurements need network namespaces (root, iproute2, nftables): %v", err)
	}
	n := &holNet{srv: netns.New(tb, "holsrv"), cli: netns.New(tb, "holcli"), srvAddr: holTunSrv, baseRTT: 2 * oneWay}
	if err := netns.DelayLink(tb, n.srv, n.cli, "holtun", holTunSrv, holTunCli, oneWay); err != nil {
		tb.Skipf("cannot make the delay line: %v", err)
	}
	return n
}

// BenchmarkHeadOfLineRTT is BenchmarkHeadOfLine over a 20 ms round trip.
// Request/response takes five times as long as paced here (a flow sends
// its next message at the first 5 ms slot after the echo, about every
// 25 ms): select -bench 'HeadOfLineRTT/paced' to leave it out.
func BenchmarkHeadOfLineRTT(b *testing.B) {
	benchHol(b, newHolTunNet(b, holOneWay), []holMode{holPaced, holRR})
}
