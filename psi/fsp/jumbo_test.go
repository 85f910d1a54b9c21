package fsp

import (
	"bytes"
	"context"
	"errors"
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
	cli, srv, l = pairOver(t, st, ct, scfg, ccfg)
	return cli, srv, l, ct, st
}

// pairOver connects a client on ct to a listener on st; the test's
// cleanup closes the connections and both transports.
func pairOver(t *testing.T, st, ct *Transport, scfg, ccfg *Config) (cli, srv *Conn, l *Listener) {
	t.Helper()
	t.Cleanup(func() { ct.Close(); st.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, srv = dialAccept(t, testContext(t), ct, l, ccfg)
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv, l
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
// UDP socket); a listener's connection takes jumbo datagrams by default,
// charges its buffered packets by their buffers (rxAccountErr) and gives
// it all back at the close, and the queue bounds are back to zero once
// the loops are done.
func TestPMTUDJumboLoopback(t *testing.T) {
	scfg, ccfg := pair(t)
	c, s, l, ct, st := udpPair(t, scfg, ccfg)
	mtu := searchDone(t, c, s) // the dialer sends to the listener
	t.Logf("PathMTU %d", mtu)
	// A probe answered late on a loaded host counts as lost, and the
	// search may end below the ceiling; never at an Ethernet size.
	if mtu <= MaxDatagramSize || mtu > JumboDatagramSize {
		t.Fatalf("PathMTU %d on loopback", mtu)
	}
	s.mu.Lock()
	jumbo, charged := s.rxJumbo, s.charged
	s.mu.Unlock()
	if !jumbo {
		t.Fatal("the listener's connection did not switch to jumbo buffers")
	}
	if min := connCharge() + baseWindow*jumboExtra; charged < min {
		t.Fatalf("charged %d, at least %d once jumbo", charged, min)
	}
	if got := l.Stats().Committed; got < charged {
		t.Fatalf("budget committed %d, connection charged %d", got, charged)
	}
	checkRx(t, s)
	pingPong(t, c, s)
	checkRx(t, s)
	c.Close()
	s.Close()
	checkRx(t, s)
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
		{"default listener", 0, 0, JumboDatagramSize},
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

// TestTakeJumboBudget: the first jumbo datagram charges a listener's
// connection for a base window of jumbo buffers; without that room in
// the budget it is dropped and nothing changes. Once taken, each jumbo
// packet buffered is charged at the jumbo size, the window in packets
// stays (jumboLimit keeps its bytes), and the close gives everything
// back.
func TestTakeJumboBudget(t *testing.T) {
	delta := int64(baseWindow) * jumboExtra
	for _, room := range []int64{delta - 1, delta + 2*rxJumboCost} {
		c, b := budgetConn(t, room)
		c.mu.Lock()
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
			if !feedJumbo(c, first+i, maxJumboPayload) {
				t.Fatalf("packet %d dropped", i)
			}
			checkRx(t, c)
		}
		if feedJumbo(c, first+6, maxJumboPayload) {
			t.Fatal("kept a packet past the budget")
		}
		if b.used > b.limit {
			t.Fatalf("%d bytes used of %d", b.used, b.limit)
		}
		checkRx(t, c)
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
// clone with it, charges the clone for its jumbo buffers, and gives it
// all back at the close.
func TestJumboClone(t *testing.T) {
	scfg, ccfg := pair(t)
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
	checkRx(t, peer)
	cl.Close()
	peer.Close()
	c.Close()
	s.Close()
	waitUntil(t, "budget back to zero", func() bool { return l.Stats().Committed == 0 })
}

// TestPMTUDJumboDefault: by default both a dialer and a listener take
// jumbo datagrams: on loopback both searches go past MaxDatagramSize.
func TestPMTUDJumboDefault(t *testing.T) {
	scfg, ccfg := pair(t)
	c, s, _, _, _ := udpPair(t, scfg, ccfg)
	if mtu := searchDone(t, s, c); mtu <= MaxDatagramSize {
		t.Fatalf("listener to dialer: PathMTU %d", mtu)
	}
	if mtu := searchDone(t, c, s); mtu <= MaxDatagramSize {
		t.Fatalf("dialer to listener: PathMTU %d", mtu)
	}
}

// FuzzJumboReceive feeds a listener's connection (wine or milk) that
// takes jumbo datagrams, charged to a budget of little room, arbitrary
// data packets, fragments of up to 64 KiB, abort markers, RELEASEs and
// skips, and reads some: nothing panics, partial
// reassemblies stay bounded, nothing delivered is larger than the
// largest datagram's payload, the bytes the read queue counts beyond
// MaxPayload (readExtra, the window's byte room) match its packets and
// the budget's charge matches the buffers held (rxAccountErr) after
// every step, and the close gives back everything charged.
func FuzzJumboReceive(f *testing.F) {
	f.Add([]byte{0, 0, 0x22, 0xf0, 1, 0, 0, 0x22, 0xf0, 2})
	f.Add([]byte{0, 1, 0, 0, 0x23, 0, 0, 0, 0x10, 0, 3, 2, 0x20, 0})
	f.Add([]byte{1, 6, 0x22, 0xf0, 0, 1, 0, 0x22, 0xf0, 0, 0, 5, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0x22, 0xf0, 0, 1, 9, 0x22, 0xf0, 0, 0, 3, 0x22, 0xf0, 0, 0, 4, 0x22, 0xf0, 0, 0})
	f.Add([]byte("190000A0000")) // milk: a jumbo abort marker out of order, skipped
	f.Fuzz(fuzzJumboReceive)
}

func fuzzJumboReceive(t *testing.T, in []byte) {
	if len(in) == 0 {
		return
	}
	{
		c, bud := budgetConn(t, baseWindow*jumboExtra+(maxPartials-1)*rxJumboCost+16*rxJumboCost)
		c.mu.Lock()
		if in[0]&1 != 0 {
			c.setMilk()
		}
		if !c.takeJumbo() {
			t.Fatal("jumbo refused")
		}
		c.mu.Unlock()
		in = in[1:]
		ctx := testContext(t)
		buf := make([]byte, 4096)
		data := func(seq uint64, op wire.Opcode, flags uint8, a int) { // a data packet of a bytes
			p := wire.Packet{Header: wire.Header{Opcode: op, Flags: flags, Seq: uint32(seq)}}
			n := min(a, maxJumboPayload)
			pb := getBufFor(n)
			c.mu.Lock()
			if !c.onData(time.Now(), &p, pb, (*pb)[:n]) {
				putBuf(pb)
			}
			c.mu.Unlock()
		}
		for len(in) >= 5 {
			op, seq := in[0]%6, c.rcv.Expected()+uint64(in[0]/6%8)
			a, b := int(in[1])<<8|int(in[2]), int(in[3])<<8|int(in[4])
			in = in[5:]
			switch op {
			case 0: // a whole data packet of a bytes, the end of a message unless b is odd
				data(seq, wire.PureData, wire.FlagEOT&^uint8(b&1*wire.FlagEOT), a)
			case 3: // an abort marker, in a buffer of a bytes
				data(seq, wire.PureData, wire.FlagAbort, a)
			case 4: // a RELEASE of a bytes
				data(seq, wire.Release, wire.FlagEOT, a)
			case 5: // a milk sender's skip
				c.mu.Lock()
				if c.milk {
					c.skipTo(seq)
				}
				c.mu.Unlock()
			case 1: // a fragment: offset a, total b
				if b == 0 || a >= b {
					continue
				}
				feedFragment(c, seq, wire.FlagEOT, a, b, bytes.Repeat([]byte{'f'}, min(b-a, 1500)))
			case 2: // a read
				c.mu.Lock()
				more := c.readLen() > 0
				c.mu.Unlock()
				if more {
					rctx, cancel := context.WithTimeout(ctx, time.Second)
					if _, _, err := c.ReadMessage(rctx, buf[:max(a%len(buf), 1)]); errors.Is(err, context.DeadlineExceeded) {
						c.mu.Lock()
						t.Fatalf("read blocked with %d packets queued: %+v", c.readLen(), c.readQ[c.readHead])
					}
					cancel()
				}
			}
			c.mu.Lock()
			extra := 0
			for _, d := range c.readQ[c.readHead:] {
				if len(d.data) > maxJumboPayload {
					t.Fatalf("delivered %d bytes", len(d.data))
				}
				extra += extraBytes(&d)
			}
			if extra != c.readExtra || len(c.frags.parts) > maxPartials || c.window() < 0 {
				t.Fatalf("readExtra %d, packets carry %d; %d partial; window %d", c.readExtra, extra, len(c.frags.parts), c.window())
			}
			if err := rxAccountErr(c); err != nil {
				t.Fatal(err)
			}
			if bud.used > bud.limit {
				t.Fatalf("%d bytes used of %d", bud.used, bud.limit)
			}
			c.mu.Unlock()
		}
		c.teardown(nil, false)
		if bud.used != 0 {
			t.Fatalf("%d bytes charged after the close", bud.used)
		}
	}
}

// TestBufSizes: a datagram buffer is small for what a small one holds and
// jumbo otherwise, a spare of the other size does not fit, and putBuf
// hands each back to its pool.
func TestBufSizes(t *testing.T) {
	for _, tc := range []struct{ n, size int }{
		{1, smallBufSize}, {MaxDatagramSize, smallBufSize}, {smallBufSize, smallBufSize},
		{smallBufSize + 1, jumboBufSize}, {LargestDatagramSize + sealRoom, jumboBufSize},
	} {
		b := getBufFor(tc.n)
		if cap(*b) != tc.size || !fits(b, tc.n) {
			t.Errorf("getBufFor(%d): capacity %d, want %d", tc.n, cap(*b), tc.size)
		}
		putBuf(b)
	}
	small, jumbo := getBufFor(100), getBufFor(5000)
	if fits(small, 5000) || fits(jumbo, 100) {
		t.Error("a spare of the other size fits")
	}
	putBuf(small)
	putBuf(jumbo)
}

// TestHostileWindowsBoundedJumbo is TestHostileWindowsBounded with the
// listener's default Config, which takes jumbo datagrams: the attackers'
// connections and clones buffer jumbo packets, and the budget, charging
// each by its buffer, still bounds the heap and every reading of the
// accounting.
func TestHostileWindowsBoundedJumbo(t *testing.T) { hostileWindows(t, 0) }
