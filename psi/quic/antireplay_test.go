package quic

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// firstFlight records the datagrams a socket sends before it first
// receives one.
type firstFlight struct {
	net.PacketConn
	mu       sync.Mutex
	sent     [][]byte
	received bool
}

func (f *firstFlight) WriteTo(b []byte, a net.Addr) (int, error) {
	f.mu.Lock()
	if !f.received {
		f.sent = append(f.sent, append([]byte(nil), b...))
	}
	f.mu.Unlock()
	return f.PacketConn.WriteTo(b, a)
}

func (f *firstFlight) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := f.PacketConn.ReadFrom(b)
	if err == nil {
		f.mu.Lock()
		f.received = true
		f.mu.Unlock()
	}
	return n, a, err
}

// TestZeroRTTReplay replays a client's 0-RTT first flight: the listener
// does not take its 0-RTT data again, so no second transient and no
// second copy of the message appear.
func TestZeroRTTReplay(t *testing.T) {
	var st Stack
	scfg := serverConfig()
	scfg.Allow0RTT = true
	ctx := testContext(t)
	l, err := st.Listen(ctx, loopback, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ccfg := clientConfig()
	ccfg.Allow0RTT = true
	ccfg.Security.SessionCache = tls.NewLRUClientSessionCache(4)
	idem := &psi.WriteOptions{Properties: &post.Properties{Idempotent: true}}
	var rec *firstFlight
	cst := Stack{PacketConn: func(netip.AddrPort) (net.PacketConn, error) {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		rec = &firstFlight{PacketConn: pc}
		return rec, err
	}}
	for i := range 2 {
		c, err := cst.Dial(ctx, l.Addr(), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		send(t, ctx, c, []byte("once"), idem)
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := readAll(ctx, s, 64); err != nil || string(m) != "once" {
			t.Fatal(m, err)
		}
		send(t, ctx, s, []byte("reply"), nil)
		if m, err := readAll(ctx, c, 64); err != nil || string(m) != "reply" {
			t.Fatal(m, err)
		}
		cli := c.(*Transient)
		<-cli.HandshakeComplete()
		if i == 1 && !cli.Used0RTT() {
			t.Fatal("the second dial did not use 0-RTT")
		}
		c.Close()
		s.Close()
	}
	rec.mu.Lock()
	flight := rec.sent
	rec.mu.Unlock()
	time.Sleep(100 * time.Millisecond)

	attacker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	for range 2 {
		for _, b := range flight {
			attacker.WriteTo(b, net.UDPAddrFromAddrPort(l.Addr()))
		}
	}
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if s, err := l.Accept(actx); err == nil {
		m, err := readAll(actx, s, 64)
		t.Fatalf("the replayed first flight made a transient (message %q, %v)", m, err)
	}
}
