package netns

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

const guard = 10 * time.Second

var (
	clientAddr   = netip.MustParsePrefix("10.0.1.2/24")
	routerInside = netip.MustParsePrefix("10.0.1.1/24")
	routerOut    = netip.MustParsePrefix("10.0.2.1/24")
	serverAddr   = netip.MustParsePrefix("10.0.2.2/24")
)

// natTopology builds client -- router (masquerade) -- server. The server
// has no route to the client's network, so only NAT lets replies back.
func natTopology(t *testing.T) (client, router, server *NS, up *Veth) {
	client, router, server = New(t, "client"), New(t, "router"), New(t, "server")
	inside := Link(t, client, router, clientAddr, routerInside)
	up = Link(t, router, server, routerOut, serverAddr)
	if err := client.DefaultRoute(routerInside.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := router.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	if err := router.Masquerade(up.AName); err != nil {
		t.Fatal(err)
	}
	_ = inside
	return client, router, server, up
}

func udpEcho(t *testing.T, ns *NS, addr netip.AddrPort) (*net.UDPConn, <-chan netip.AddrPort) {
	t.Helper()
	c, err := ns.ListenUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	srcs := make(chan netip.AddrPort, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case srcs <- netip.AddrPortFrom(from.Addr().Unmap(), from.Port()):
			default:
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c, srcs
}

func TestNATMasquerade(t *testing.T) {
	client, _, server, _ := natTopology(t)
	srvAddr := netip.AddrPortFrom(serverAddr.Addr(), 4433)
	_, srcs := udpEcho(t, server, srvAddr)

	c, err := client.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(guard))
	if _, err := c.WriteToUDPAddrPort([]byte("hello"), srvAddr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hello" || netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != srvAddr {
		t.Fatalf("got %q from %v", buf[:n], from)
	}
	if src := <-srcs; src.Addr() != routerOut.Addr() {
		t.Fatalf("server saw source %v, want the router's %v", src, routerOut.Addr())
	}
}

func TestTCPThroughNAT(t *testing.T) {
	client, _, server, _ := natTopology(t)
	ln, err := server.Listen("tcp", serverAddr.Addr().String()+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(c.RemoteAddr().String()))
		c.Close()
	}()
	ctx := t.Context()
	c, err := client.DialContext(ctx, "tcp", serverAddr.Addr().String()+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(guard))
	seen, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(seen), routerOut.Addr().String()+":") {
		t.Fatalf("server saw %s", seen)
	}
}

// TestDropShare sends bursts of 100-byte datagrams, each burst followed
// by a short marker the rule does not match, and checks that about 30%
// of the datagrams were dropped.
func TestDropShare(t *testing.T) {
	const percent, bursts, burst = 30, 20, 100
	a, b := New(t, "a"), New(t, "b")
	Link(t, a, b, netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("10.9.0.2/24"))
	to := netip.MustParseAddrPort("10.9.0.2:9000")
	r, err := b.ListenUDP(to)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetReadBuffer(1 << 20)
	// udp length is the payload plus 8 header bytes.
	if err := b.Drop(percent, "udp dport 9000 udp length 108"); err != nil {
		t.Fatal(err)
	}
	s, err := a.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r.SetReadDeadline(time.Now().Add(guard))
	data, marker := make([]byte, 100), []byte("marker")
	got := 0
	buf := make([]byte, 2048)
	for range bursts {
		for range burst {
			if _, err := s.WriteToUDPAddrPort(data, to); err != nil {
				t.Fatal(err)
			}
		}
		s.WriteToUDPAddrPort(marker, to)
		for {
			n, _, err := r.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(data) {
				break
			}
			got++
		}
	}
	const total = bursts * burst
	loss := 1 - float64(got)/total
	sigma := math.Sqrt(0.3 * 0.7 / total)
	if math.Abs(loss-0.3) > 5*sigma {
		t.Fatalf("dropped %.3f, want 0.30±%.3f", loss, 5*sigma)
	}
	t.Logf("dropped %.3f of %d", loss, total)

	if err := b.ClearDrops(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		s.WriteToUDPAddrPort(data, to)
	}
	for range 10 {
		if _, _, err := r.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBlockUDP leaves TCP working while UDP is blocked, then unblocks.
func TestBlockUDP(t *testing.T) {
	client, router, server, _ := natTopology(t)
	srvAddr := netip.AddrPortFrom(serverAddr.Addr(), 4433)
	udpEcho(t, server, srvAddr)
	ln, err := server.Listen("tcp", srvAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	if err := router.BlockUDP(); err != nil {
		t.Fatal(err)
	}
	c, err := client.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteToUDPAddrPort([]byte("lost"), srvAddr)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := c.ReadFromUDPAddrPort(make([]byte, 16)); err == nil {
		t.Fatal("UDP crossed a router that blocks it")
	}
	tc, err := client.DialContext(t.Context(), "tcp", srvAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(guard))
	tc.Write([]byte("tcp"))
	if b := make([]byte, 3); !readFull(tc, b) || string(b) != "tcp" {
		t.Fatal("TCP blocked too")
	}
	if err := router.ClearDrops(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(guard))
	c.WriteToUDPAddrPort([]byte("found"), srvAddr)
	b := make([]byte, 16)
	n, _, err := c.ReadFromUDPAddrPort(b)
	if err != nil || string(b[:n]) != "found" {
		t.Fatalf("after unblocking: %q %v", b[:n], err)
	}
}

func readFull(r io.Reader, b []byte) bool {
	_, err := io.ReadFull(r, b)
	return err == nil
}

// TestMobility moves the client to a second uplink: the old veth goes
// down and the server sees the client's new address.
func TestMobility(t *testing.T) {
	client, server := New(t, "mobile"), New(t, "server")
	wifi := Link(t, client, server, netip.MustParsePrefix("10.7.1.2/24"), netip.MustParsePrefix("10.7.1.1/24"))
	lte := Link(t, client, server, netip.MustParsePrefix("10.7.2.2/24"), netip.MustParsePrefix("10.7.2.1/24"))
	if err := lte.SetUp(false); err != nil {
		t.Fatal(err)
	}
	srvAddr := netip.MustParseAddrPort("10.7.1.1:5000")
	_, srcs := udpEcho(t, server, netip.AddrPortFrom(netip.IPv4Unspecified(), 5000))
	c, err := client.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(guard))
	ping := func(seq uint32) {
		t.Helper()
		p := binary.BigEndian.AppendUint32(nil, seq)
		if _, err := c.WriteToUDPAddrPort(p, srvAddr); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 16)
		n, _, err := c.ReadFromUDPAddrPort(b)
		if err != nil || !bytes.Equal(b[:n], p) {
			t.Fatalf("ping %d: %v", seq, err)
		}
	}
	ping(1)
	if src := <-srcs; src.Addr() != wifi.AAddr.Addr() {
		t.Fatalf("source %v", src)
	}
	// Hand over: wifi down, lte up, and reach the server through lte.
	if err := wifi.SetUp(false); err != nil {
		t.Fatal(err)
	}
	if err := lte.SetUp(true); err != nil {
		t.Fatal(err)
	}
	if err := client.AddRoute(netip.PrefixFrom(srvAddr.Addr(), 32), lte.BAddr.Addr()); err != nil {
		t.Fatal(err)
	}
	ping(2)
	if src := <-srcs; src.Addr() != lte.AAddr.Addr() {
		t.Fatalf("source %v after handover", src)
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	ns := New(t, "do")
	self := func() string {
		l, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	before := self()
	var inside string
	if err := ns.Do(func() error { inside = self(); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside == before {
		t.Fatal("Do did not switch namespace")
	}
	for range 20 { // the thread is back in the pool, on any thread
		if self() != before {
			t.Fatal("a thread was left in the namespace")
		}
	}
	if err := Host().Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestHostLink(t *testing.T) {
	ns := New(t, "peer")
	// The host is shared with other test processes: pick a random /30.
	x, y := byte(rand.IntN(256)), byte(rand.IntN(64)*4)
	hostAddr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 211, x, y + 1}), 30)
	peerAddr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 211, x, y + 2}), 30)
	v := Link(t, Host(), ns, hostAddr, peerAddr)
	to := netip.AddrPortFrom(peerAddr.Addr(), 7)
	_, srcs := udpEcho(t, ns, to)
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.AAddr.Addr(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(guard))
	c.WriteToUDPAddrPort([]byte("x"), to)
	if _, _, err := c.ReadFromUDPAddrPort(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if src := <-srcs; src.Addr() != v.AAddr.Addr() {
		t.Fatalf("source %v", src)
	}
}

func TestIPv6(t *testing.T) {
	a, b := New(t, "a6"), New(t, "b6")
	Link(t, a, b, netip.MustParsePrefix("fd00:7::1/64"), netip.MustParsePrefix("fd00:7::2/64"))
	to := netip.MustParseAddrPort("[fd00:7::2]:9")
	_, srcs := udpEcho(t, b, to)
	c, err := a.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(guard))
	c.WriteToUDPAddrPort([]byte("v6"), to)
	if _, _, err := c.ReadFromUDPAddrPort(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if src := <-srcs; src.Addr() != netip.MustParseAddr("fd00:7::1") {
		t.Fatalf("source %v", src)
	}
}

func TestMoveLink(t *testing.T) {
	a, b, c := New(t, "a"), New(t, "b"), New(t, "c")
	v := Link(t, a, b, netip.MustParsePrefix("10.8.0.1/24"), netip.MustParsePrefix("10.8.0.2/24"))
	if err := b.MoveLink(v.BName, c); err != nil {
		t.Fatal(err)
	}
	if err := c.AddAddr(v.BName, v.BAddr); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLinkUp(v.BName, true); err != nil {
		t.Fatal(err)
	}
	out, err := c.Exec("ip", "-o", "addr", "show", "dev", v.BName)
	if err != nil || !strings.Contains(out, "10.8.0.2/24") {
		t.Fatalf("%q %v", out, err)
	}
	if _, err := b.Exec("ip", "link", "show", v.BName); err == nil {
		t.Fatal("link still in the old namespace")
	}
	to := netip.MustParseAddrPort("10.8.0.2:9")
	_, srcs := udpEcho(t, c, to)
	s, err := a.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(guard))
	s.WriteToUDPAddrPort([]byte("moved"), to)
	if _, _, err := s.ReadFromUDPAddrPort(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	<-srcs
}
