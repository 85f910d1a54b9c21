package netem

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// echoServer echoes every datagram and reports each source address.
func echoServer(t testing.TB) (netip.AddrPort, <-chan netip.AddrPort) {
	t.Helper()
	c := listenUDP(t)
	srcs := make(chan netip.AddrPort, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, largeBuf)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case srcs <- from:
			default:
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), srcs
}

func newRelay(t testing.TB, server netip.AddrPort, up, down Config) *Relay {
	t.Helper()
	r, err := NewRelay(server, up, down)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func roundTrip(t *testing.T, c *net.UDPConn, to netip.AddrPort, seq uint32) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(seqPacket(seq, 32), to); err != nil {
		t.Fatal(err)
	}
	for {
		got := readN(t, c, 1)
		if got[0] == seq {
			return
		}
	}
}

func TestRelayEcho(t *testing.T) {
	checkLeaks(t)
	server, srcs := echoServer(t)
	r := newRelay(t, server, Config{Delay: 5 * time.Millisecond}, Config{Delay: 5 * time.Millisecond})
	if r.Addr().Addr() != netip.AddrFrom4([4]byte{127, 0, 0, 1}) || r.Server() != server {
		t.Fatalf("relay at %v for %v", r.Addr(), r.Server())
	}
	c := listenUDP(t)
	start := time.Now()
	roundTrip(t, c, r.Addr(), 1)
	if time.Since(start) < 10*time.Millisecond {
		t.Fatal("relay did not delay")
	}
	src := <-srcs
	if src == c.LocalAddr().(*net.UDPAddr).AddrPort() || src == r.Addr() {
		t.Fatalf("server saw source %v", src)
	}
	st := r.Stats()
	if st.Up.Packets != 1 || st.Down.Packets != 1 || st.Up.Bytes != 32 || st.Mappings != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRelayMappings(t *testing.T) {
	checkLeaks(t)
	server, srcs := echoServer(t)
	r := newRelay(t, server, Config{}, Config{})
	a, b := listenUDP(t), listenUDP(t)
	roundTrip(t, a, r.Addr(), 1)
	roundTrip(t, b, r.Addr(), 2)
	roundTrip(t, a, r.Addr(), 3)
	sa, sb, sa2 := <-srcs, <-srcs, <-srcs
	if sa == sb || sa != sa2 {
		t.Fatalf("server saw %v, %v, %v", sa, sb, sa2)
	}
	if n := r.Stats().Mappings; n != 2 {
		t.Fatalf("%d mappings", n)
	}
	// A NAT that forgets its state gives the client a new public port.
	r.Rebind()
	roundTrip(t, a, r.Addr(), 4)
	if s := <-srcs; s == sa {
		t.Fatalf("source %v unchanged after Rebind", s)
	}
}

func TestRelayBlackhole(t *testing.T) {
	checkLeaks(t)
	server, _ := echoServer(t)
	r := newRelay(t, server, Config{}, Config{})
	c := listenUDP(t)
	roundTrip(t, c, r.Addr(), 1)
	r.SetBlackhole(true)
	for i := range 50 {
		c.WriteToUDPAddrPort(seqPacket(uint32(100+i), 32), r.Addr())
	}
	waitFor(t, "relay to drop 50 packets", func() bool { return r.Stats().Up.Dropped == 50 })
	r.SetBlackhole(false)
	c.WriteToUDPAddrPort(seqPacket(2, 32), r.Addr())
	if got := readN(t, c, 1); got[0] != 2 {
		t.Fatalf("packet %d crossed the blackhole", got[0])
	}
	st := r.Stats()
	if st.Up.Dropped != 50 || st.Up.Packets != 2 || st.Down.Packets != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRelayLossBothWays(t *testing.T) {
	checkLeaks(t)
	server, _ := echoServer(t)
	r := newRelay(t, server, Config{Loss: 0.2, Seed: 1}, Config{Loss: 0.2, Seed: 2})
	c := listenUDP(t)
	// Send in batches and wait until the relay settled each packet both
	// ways, so no socket buffer overflows.
	var st RelayStats
	for i := range 500 {
		c.WriteToUDPAddrPort(seqPacket(uint32(i), 32), r.Addr())
		if i%50 == 49 {
			waitFor(t, "relay to settle", func() bool {
				st = r.Stats()
				return st.Up.Packets+st.Up.Dropped == uint64(i+1) &&
					st.Down.Packets+st.Down.Dropped == st.Up.Packets
			})
		}
	}
	readN(t, c, int(st.Down.Packets))
	if st.Up.Dropped < 50 || st.Down.Dropped < 30 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRelayIPv6(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer c.Close()
	checkLeaks(t)
	server, _ := echoServer(t)
	r := newRelay(t, server, Config{}, Config{})
	// Client on IPv6 relays to an IPv4 server: fine for a relay.
	r6, err := newRelayOn(netip.MustParseAddrPort("[::1]:0"), server, Config{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r6.Close()
	roundTrip(t, c, r6.Addr(), 7)
	_ = r
}

func TestRelayClose(t *testing.T) {
	checkLeaks(t)
	server, _ := echoServer(t)
	r, err := NewRelay(server, Config{Delay: time.Hour}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := listenUDP(t)
	c.WriteToUDPAddrPort(seqPacket(1, 32), r.Addr())
	waitFor(t, "a mapping", func() bool { return r.Stats().Mappings == 1 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if st := r.Stats(); st.Up.Dropped != 1 || st.Mappings != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// tcpEcho echoes every TCP connection.
func tcpEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func newTCPRelay(t testing.TB, server netip.AddrPort) *TCPRelay {
	t.Helper()
	r, err := NewTCPRelay(server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dialTCP(t *testing.T, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", to.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(guard))
	return c
}

func echoCheck(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo mismatch")
	}
}

func TestTCPRelay(t *testing.T) {
	checkLeaks(t)
	r := newTCPRelay(t, tcpEcho(t))
	c := dialTCP(t, r.Addr())
	msg := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through relay: %v", err)
	}
	// The relay counts a chunk once its write returns, which may be after
	// the echo of it came back.
	want := uint64(len(msg))
	st := r.Stats()
	for end := time.Now().Add(time.Second); (st.BytesUp != want || st.BytesDown != want) && time.Now().Before(end); st = r.Stats() {
		time.Sleep(time.Millisecond)
	}
	if st.Accepted != 1 || st.Active != 1 || st.BytesUp != want || st.BytesDown != want {
		t.Fatalf("stats %+v", st)
	}
}

func TestTCPRelayBlackhole(t *testing.T) {
	checkLeaks(t)
	r := newTCPRelay(t, tcpEcho(t))
	c := dialTCP(t, r.Addr())
	echoCheck(t, c, []byte("before"))
	r.SetBlackhole(true)
	c.Write([]byte("during"))
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := c.Read(make([]byte, 10)); !isTimeout(err) {
		t.Fatalf("read through blackhole: %v", err)
	}
	// A connection made while blackholed is held, not forwarded.
	c2 := dialTCP(t, r.Addr())
	c2.Write([]byte("new"))
	r.SetBlackhole(false)
	c.SetReadDeadline(time.Now().Add(guard))
	got := make([]byte, 6)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "during" {
		t.Fatalf("after blackhole: %q %v", got, err)
	}
	got = got[:3]
	if _, err := io.ReadFull(c2, got); err != nil || string(got) != "new" {
		t.Fatalf("held connection: %q %v", got, err)
	}
}

func TestTCPRelayReset(t *testing.T) {
	checkLeaks(t)
	r := newTCPRelay(t, tcpEcho(t))
	c := dialTCP(t, r.Addr())
	echoCheck(t, c, []byte("x"))
	r.Reset()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Reset succeeded")
	}
	echoCheck(t, dialTCP(t, r.Addr()), []byte("y"))
}

func TestTCPRelayCloseWhileBlackholed(t *testing.T) {
	checkLeaks(t)
	r, err := NewTCPRelay(tcpEcho(t))
	if err != nil {
		t.Fatal(err)
	}
	r.SetBlackhole(true)
	c := dialTCP(t, r.Addr())
	c.Write([]byte("stuck"))
	waitFor(t, "accept", func() bool { return r.Stats().Accepted == 1 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection survived relay Close")
	}
}

func TestDualRelayFallback(t *testing.T) {
	checkLeaks(t)
	udpServer, _ := echoServer(t)
	u, tr, err := NewDualRelay(udpServer, tcpEcho(t), Config{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	defer tr.Close()
	if u.Addr() != tr.Addr() {
		t.Fatalf("UDP %v, TCP %v", u.Addr(), tr.Addr())
	}
	u.SetBlackhole(true) // UDP blocked, TCP works
	c := listenUDP(t)
	c.WriteToUDPAddrPort(seqPacket(1, 8), u.Addr())
	echoCheck(t, dialTCP(t, tr.Addr()), []byte("tcp works"))
	// The UDP relay reads the datagram on its own goroutine, which the
	// TCP echo does not wait for.
	waitFor(t, "the UDP relay to drop the datagram", func() bool { return u.Stats().Up.Dropped == 1 })
	if st := u.Stats(); st.Up.Dropped != 1 || st.Up.Packets != 0 {
		t.Fatalf("stats %+v", st)
	}
}
