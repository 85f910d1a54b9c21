package quic

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/postsockets/postsockets/psi"
)

// lossyConn drops every nth packet written after the first skip.
type lossyConn struct {
	net.PacketConn
	n, skip uint64
	count   atomic.Uint64
	dropped atomic.Uint64
}

func (c *lossyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if i := c.count.Add(1); i > c.skip && i%c.n == 0 {
		c.dropped.Add(1)
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// TestLossyPath moves data both ways on a root and a fork over sockets
// that drop one packet in ten, supplied through Stack.PacketConn.
func TestLossyPath(t *testing.T) {
	var mu sync.Mutex
	var conns []*lossyConn
	st := Stack{PacketConn: func(local netip.AddrPort) (net.PacketConn, error) {
		if !local.IsValid() {
			local = loopback
		}
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
		if err != nil {
			return nil, err
		}
		lc := &lossyConn{PacketConn: pc, n: 10, skip: 10}
		mu.Lock()
		conns = append(conns, lc)
		mu.Unlock()
		return lc, nil
	}}
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	cf, sf := forkPair(t, ctx, cli, srv, psi.Wine)

	size := 2 << 20
	if testing.Short() {
		size = 256 << 10
	}
	var wg sync.WaitGroup
	for i, p := range [][2]psi.Transient{{cli, srv}, {srv, cli}, {cf, sf}, {sf, cf}} {
		msg := pattern(size, byte(i))
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := p[0].WriteMessage(ctx, msg, true, nil); err != nil {
				t.Errorf("pair %d write: %v", i, err)
			}
		}()
		go func() {
			defer wg.Done()
			got, err := readAll(ctx, p[1], 16<<10)
			if err != nil || !bytes.Equal(got, msg) {
				t.Errorf("pair %d: %d bytes, %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()

	// Datagrams may be lost; a reliable message after them still comes.
	for range 50 {
		send(t, ctx, cli, []byte("dgram"), unreliableOpts)
	}
	send(t, ctx, cli, []byte("last"), nil)
	n := 0
	for {
		m, err := readAll(ctx, srv, 64)
		if err != nil {
			t.Fatal(err)
		}
		if string(m) == "last" {
			break
		}
		n++
	}
	var dropped uint64
	for _, c := range conns {
		dropped += c.dropped.Load()
	}
	t.Logf("%d packets dropped; %d of 50 datagrams read before the last message", dropped, n)
	if dropped == 0 {
		t.Error("no packet was dropped")
	}
}
