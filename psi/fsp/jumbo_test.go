package fsp

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// udpPair connects a client and a server over UDP sockets on loopback,
// whose MTU (65,536) takes any datagram FSP sends.
func udpPair(t *testing.T, scfg, ccfg *Config) (cli, srv *Conn, l *Listener, ct, st *Transport) {
	t.Helper()
	st, ct = &Transport{Conn: mustUDP(t)}, &Transport{Conn: mustUDP(t)}
	t.Cleanup(func() { ct.Close(); st.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, srv = dialAccept(t, testContext(t), ct, l, ccfg)
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv, l, ct, st
}

// waitUntil polls cond until it holds, at most 10 s: a bound on work the
// loops finish on their own, not a timing.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestPMTUDJumboLoopback: on loopback the search goes past
// MaxDatagramSize up to its ceiling (JumboDatagramSize by default on a
// UDP socket); a listener that takes jumbo datagrams (MaxPathMTU set)
// charges its buffered packets at rxJumboCost and gives it all back at
// the close, and the queue bounds are back to zero once the loops are
// done.
func TestPMTUDJumboLoopback(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.MaxPathMTU = JumboDatagramSize
	c, s, l, ct, st := udpPair(t, scfg, ccfg)
	mtu := searchDone(t, c, s) // the dialer sends to the listener
	t.Logf("PathMTU %d", mtu)
	// A probe answered late on a loaded host counts as lost, and the
	// search may end below the ceiling; never at an Ethernet size.
	if mtu <= MaxDatagramSize || mtu > JumboDatagramSize {
		t.Fatalf("PathMTU %d on loopback", mtu)
	}
	s.mu.Lock()
	jumbo, charged, held := s.rxJumbo, s.charged, s.held
	s.mu.Unlock()
	if !jumbo {
		t.Fatal("the listener's connection did not switch to jumbo buffers")
	}
	if min := connBase + int64(held)*rxJumboCost; charged < min {
		t.Fatalf("charged %d for %d packets held at jumbo size (at least %d)", charged, held, min)
	}
	if got := l.Stats().Committed; got < charged {
		t.Fatalf("budget committed %d, connection charged %d", got, charged)
	}
	pingPong(t, c, s)
	c.Close()
	s.Close()
	waitUntil(t, "budget back to zero", func() bool { return l.Stats().Committed == 0 })
	waitUntil(t, "queue bounds back to zero", func() bool { return st.queued.Load() == 0 && ct.queued.Load() == 0 })
}

// TestPMTUDJumboLimits: the search stops at the sender's MaxPathMTU, and
// at the receiver's, which drops larger datagrams unanswered.
func TestPMTUDJumboLimits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		sender, rcv int
		want        int
	}{
		{"sender 4000", 4000, JumboDatagramSize, 4000},
		{"receiver 1452", 0, MaxDatagramSize, MaxDatagramSize},
		{"default listener", 0, 0, MaxDatagramSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scfg, ccfg := pair(t)
			ccfg.MaxPathMTU, scfg.MaxPathMTU = tc.sender, tc.rcv
			c, s, _, _, _ := udpPair(t, scfg, ccfg)
			mtu := searchDone(t, c, s)
			if mtu > tc.want || mtu < tc.want-pmtuStep {
				t.Fatalf("PathMTU %d, want %d", mtu, tc.want)
			}
			s.mu.Lock()
			jumbo := s.rxJumbo
			s.mu.Unlock()
			if jumbo != (tc.want > MaxDatagramSize) {
				t.Fatalf("receiver takes jumbo datagrams: %v", jumbo)
			}
		})
	}
}

// TestMaxPathMTUClamped: Config.MaxPathMTU's zero value depends on the
// socket, and other values are clamped.
func TestMaxPathMTUClamped(t *testing.T) {
	for _, tc := range []struct {
		set  int
		udp  bool
		want int
	}{
		{0, true, JumboDatagramSize}, {0, false, MaxDatagramSize}, {1000, true, MaxDatagramSize},
		{4000, false, 4000}, {1 << 20, true, LargestDatagramSize},
	} {
		if got := (&Config{MaxPathMTU: tc.set}).maxPathMTU(tc.udp); got != tc.want {
			t.Errorf("MaxPathMTU %d, UDP %v: %d, want %d", tc.set, tc.udp, got, tc.want)
		}
	}
}

// TestTakeJumboBudget: the first jumbo datagram charges the room a
// listener's connection holds again at rxJumboCost; without that room in
// the budget it is dropped and nothing changes. Once taken, the packets
// buffered are charged at the jumbo size, the window in packets stays
// (jumboLimit keeps its bytes), and the close gives everything back.
func TestTakeJumboBudget(t *testing.T) {
	delta := int64(baseWindow) * (rxJumboCost - rxCost)
	for _, room := range []int64{delta - 1, delta + 2*rxJumboCost} {
		c := fragConn(t)
		b := newBudget(connCharge() + room)
		b.share, b.pshare = b.limit, b.limit
		peer := netip.MustParseAddr("192.0.2.1")
		if !b.take(peer, connCharge()) {
			t.Fatal("no room")
		}
		c.mu.Lock()
		c.pmtu.ceil = JumboDatagramSize
		c.bud, c.budPeer, c.charged, c.held = b, peer, connCharge(), baseWindow
		took := c.takeJumbo()
		used, rcvMax, dropped := b.used, c.rcvMax, c.stats.BudgetDropped
		c.mu.Unlock()
		if room < delta {
			if took || used != connCharge() || dropped != 1 {
				t.Fatalf("no room: took %v, %d bytes used, %d dropped", took, used, dropped)
			}
			continue
		}
		if !took || used != connCharge()+delta {
			t.Fatalf("took %v, %d bytes used, want %d", took, used, connCharge()+delta)
		}
		if want := (&Config{}).recvPackets(); rcvMax != want {
			t.Fatalf("largest window of %d packets, want %d", rcvMax, want)
		}
		// Room for two jumbo packets past the base window, not three.
		first := c.rcv.Expected()
		for i := range uint64(6) {
			if !feedData(c, first+i) {
				t.Fatalf("packet %d dropped", i)
			}
		}
		if feedData(c, first+6) {
			t.Fatal("kept a packet past the budget")
		}
		if b.used > b.limit {
			t.Fatalf("%d bytes used of %d", b.used, b.limit)
		}
		c.teardown(nil, false)
		if b.used != 0 {
			t.Fatalf("%d bytes charged after the close", b.used)
		}
	}
}

// TestJumboForgedDropped: a forged datagram of jumbo size for an
// established connection is dropped, gets no reply and does not switch
// the connection to jumbo buffers.
func TestJumboForgedDropped(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.MaxPathMTU = JumboDatagramSize
	ccfg.DisablePathMTUDiscovery = true // the client itself sends nothing large
	c, s, l, _, _ := udpPair(t, scfg, ccfg)
	pingPong(t, c, s)
	s.mu.Lock()
	dst, src, dropped := s.local, s.peer, s.stats.PacketsDropped
	s.mu.Unlock()
	p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Dst: dst, Src: src, PN: 1 << 20, Seq: 1}}
	b := wire.AppendHeader(nil, &p)
	b = append(b, bytes.Repeat([]byte{0xa5}, JumboDatagramSize-len(b))...)
	atk := mustUDP(t)
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(l.Addr().String()))
	for range 3 {
		if _, err := atk.WriteTo(b, to); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the forged datagrams dropped", func() bool { return s.Stats().PacketsDropped >= dropped+3 })
	s.mu.Lock()
	jumbo := s.rxJumbo
	s.mu.Unlock()
	if jumbo {
		t.Fatal("a forged datagram switched the connection to jumbo buffers")
	}
	atk.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := atk.ReadFrom(make([]byte, 64<<10)); err == nil {
		t.Fatalf("a %d-byte reply to a forged datagram", n)
	}
	pingPong(t, c, s)
}

// TestJumboClone: a clone starts at its session's jumbo path MTU, so its
// very first packet may be a jumbo datagram: the listener opens the
// clone with it, charges the clone at the jumbo size, and gives it all
// back at the close.
func TestJumboClone(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.MaxPathMTU = JumboDatagramSize
	c, s, l, _, _ := udpPair(t, scfg, ccfg)
	if mtu := searchDone(t, c, s); mtu <= MaxDatagramSize {
		t.Fatalf("PathMTU %d on loopback", mtu)
	}
	ctx := testContext(t)
	cl, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mtu := cl.PathMTU(); mtu <= MaxDatagramSize {
		t.Fatalf("clone PathMTU %d", mtu)
	}
	msg := randBytes(1 << 20)
	go cl.SendMessage(ctx, msg)
	peer, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := peer.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("%d bytes: %v", len(got), err)
	}
	peer.mu.Lock()
	jumbo := peer.rxJumbo
	peer.mu.Unlock()
	if !jumbo {
		t.Fatal("the listener's clone did not switch to jumbo buffers")
	}
	cl.Close()
	peer.Close()
	c.Close()
	s.Close()
	waitUntil(t, "budget back to zero", func() bool { return l.Stats().Committed == 0 })
}

// TestPMTUDJumboDefault: by default a dialer takes jumbo datagrams and a
// listener does not (Config.MaxPathMTU): the listener's search toward
// the dialer reaches the jumbo size, the dialer's toward the listener
// stops at MaxDatagramSize.
func TestPMTUDJumboDefault(t *testing.T) {
	scfg, ccfg := pair(t)
	c, s, _, _, _ := udpPair(t, scfg, ccfg)
	if mtu := searchDone(t, s, c); mtu <= MaxDatagramSize {
		t.Fatalf("listener to dialer: PathMTU %d", mtu)
	}
	if mtu := searchDone(t, c, s); mtu != MaxDatagramSize {
		t.Fatalf("dialer to listener: PathMTU %d", mtu)
	}
}
