package quic

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/psi"
)

// TestAbusedSourceHeldOff: an address whose connection the listener
// closed for abuse (small STREAM frames left unread past the count) is
// refused at its next dials for abusePenalty, while another address of
// its /24 dials in at once. Before, the abusive address dialled in again
// at once, with a fresh window to fill (the attack row QUICUnreadFrames
// re-dials so), and the test failed.
func TestAbusedSourceHeldOff(t *testing.T) {
	ctx := testContext(t)
	l := budgetListener(t, ctx, &Stack{MemoryBudget: 8 << 20}, serverConfig(), func(psi.Transient) bool { return true })
	bad := netip.MustParseAddr("127.0.5.2")
	qc := rawForker(t, ctx, bad, l.Addr())
	ss := smallForks(t, qc, 64)
	for qc.Context().Err() == nil && ctx.Err() == nil {
		writeRound(ss, []byte{'x'}, time.Millisecond)
	}
	if bs := l.BudgetStats(); bs.SmallFrameCloses != 1 {
		t.Fatalf("%d connections closed for frames unread, want 1", bs.SmallFrameCloses)
	}
	for i := range 3 {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: bad.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		again, err := quicgo.Dial(ctx, pc, net.UDPAddrFromAddrPort(l.Addr()), rawTLS(), &quicgo.Config{MaxIdleTimeout: time.Minute})
		var te *quicgo.TransportError
		if !errors.As(err, &te) || te.ErrorCode != quicgo.ConnectionRefused {
			t.Errorf("re-dial %d from the abusive address: %v, want CONNECTION_REFUSED", i, err)
		}
		if again != nil {
			again.CloseWithError(0, "")
		}
		pc.Close()
	}
	// A neighbour, in the same /24, is served.
	rawForker(t, ctx, netip.MustParseAddr("127.0.5.3"), l.Addr())
}
