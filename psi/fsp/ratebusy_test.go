package fsp

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// requestCounter counts the CONNECT_REQUESTs a client socket sends.
type requestCounter struct {
	net.PacketConn
	n atomic.Int32
}

func (c *requestCounter) WriteTo(b []byte, a net.Addr) (int, error) {
	var p wire.Packet
	if wire.Parse(b, &p) == nil && p.Opcode == wire.ConnectRequest {
		c.n.Add(1)
	}
	return c.PacketConn.WriteTo(b, a)
}

// TestRateOnlyWhenBusy: a client that dials one handshake after another,
// far past its address's share of the handshake rate, is not held to it
// while the listener has fewer than rateAbove handshakes pending, as on
// the QUIC and TCP listeners: every CONNECT_REQUEST is answered the first
// time. Before, the 26th within a second was dropped and resent, and a
// resumption over the rate fell back to a full handshake.
func TestRateOnlyWhenBusy(t *testing.T) {
	const n = 60
	scfg, ccfg := pair(t)
	scfg.MaxHandshakeRate = 8 // 2 a second from one address
	scfg.MemoryBudget = 1 << 30
	l := listen(t, scfg)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rc := &requestCounter{PacketConn: pc}
	tr := &Transport{Conn: rc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	ctx := testContext(t)
	for i := range n {
		c, err := tr.Dial(ctx, l.Addr(), ccfg)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		s.Close()
		c.Close()
	}
	if got := rc.n.Load(); got != n {
		t.Fatalf("%d CONNECT_REQUESTs for %d sequential dials: some were dropped by the rate", got, n)
	}
}
