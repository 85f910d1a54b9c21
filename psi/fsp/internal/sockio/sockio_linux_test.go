//go:build linux

package sockio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	kinds["nogso"] = func(u *net.UDPConn) Conn {
		c := New(u)
		c.(*batchConn).gso.Store(false)
		return c
	}
	kinds["nogro"] = func(u *net.UDPConn) Conn {
		c := New(u)
		c.(*batchConn).setGRO(false)
		return c
	}
}

func batch(t testing.TB, c Conn) *batchConn {
	t.Helper()
	bc, ok := c.(*batchConn)
	if !ok {
		t.Fatalf("New(*net.UDPConn) = %T, want the batched Conn", c)
	}
	return bc
}

func equalBatch(n, size int, dst netip.AddrPort) []Packet {
	pkts := make([]Packet, n)
	for i := range pkts {
		b := payload(i, size)
		pkts[i] = Packet{Buf: b, N: size, Addr: dst}
	}
	return pkts
}

func TestGSO(t *testing.T) {
	su := listen(t, "udp4", "127.0.0.1:0")
	s := batch(t, New(su))
	if !s.gso.Load() {
		t.Skip("kernel without UDP_SEGMENT")
	}
	ru := listen(t, "udp4", "127.0.0.1:0")
	r := New(ru)
	pkts := equalBatch(100, 1000, r.LocalAddr())
	pkts[99].N = 500 // a short tail segment
	if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	// 64 packets per call: one GSO message of 64, then one of 36.
	if s.gsoSends.Load() != 2 || !s.gsoOK.Load() {
		t.Errorf("GSO messages sent: %d, want 2", s.gsoSends.Load())
	}
	receive(t, r, ru, s.LocalAddr(), pkts, len(pkts))
}

// TestGSOFallback makes the kernel refuse GSO: it rejects UDP_SEGMENT on a
// socket with checksums disabled (SO_NO_CHECK) with EINVAL. The packets must
// still arrive, one datagram each, and GSO must be turned off.
func TestGSOFallback(t *testing.T) {
	su := listen(t, "udp4", "127.0.0.1:0")
	s := batch(t, New(su))
	if !s.gso.Load() {
		t.Skip("kernel without UDP_SEGMENT")
	}
	rc, _ := su.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) })
	if serr != nil {
		t.Skipf("SO_NO_CHECK: %v", serr)
	}
	ru := listen(t, "udp4", "127.0.0.1:0")
	r := New(ru)
	pkts := equalBatch(64, 1000, r.LocalAddr())
	if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if s.gso.Load() || s.gsoSends.Load() != 0 {
		t.Errorf("GSO still on (%v) after EINVAL, %d GSO sends", s.gso.Load(), s.gsoSends.Load())
	}
	receive(t, r, ru, s.LocalAddr(), pkts, len(pkts))
	// Later batches go straight to the fallback.
	if n, err := s.WriteBatch(pkts[:10]); err != nil || n != 10 {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	receive(t, r, ru, s.LocalAddr(), pkts[:10], 10)
}

// TestGSOErrorAfterSuccess checks that once GSO has worked, a refused GSO
// message is resent without it but GSO stays on.
func TestGSOErrorAfterSuccess(t *testing.T) {
	su := listen(t, "udp4", "127.0.0.1:0")
	s := batch(t, New(su))
	if !s.gso.Load() {
		t.Skip("kernel without UDP_SEGMENT")
	}
	ru := listen(t, "udp4", "127.0.0.1:0")
	r := New(ru)
	pkts := equalBatch(8, 1000, r.LocalAddr())
	if _, err := s.WriteBatch(pkts); err != nil {
		t.Fatal(err)
	}
	receive(t, r, ru, s.LocalAddr(), pkts, len(pkts))
	rc, _ := su.SyscallConn()
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) })
	if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if !s.gso.Load() {
		t.Error("GSO turned off although it had worked")
	}
	receive(t, r, ru, s.LocalAddr(), pkts, len(pkts))
}

func TestMaxBatch(t *testing.T) {
	if got := New(listen(t, "udp4", "127.0.0.1:0")).MaxBatch(); got != batchSize {
		t.Errorf("MaxBatch = %d, want %d", got, batchSize)
	}
	if got := New(wrapper{listen(t, "udp4", "127.0.0.1:0")}).MaxBatch(); got != 1 {
		t.Errorf("generic MaxBatch = %d, want 1", got)
	}
}

func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the pooled read and write state is dropped at random under -race")
	}
	for _, tc := range []struct{ gso, gro bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		gso := tc.gso
		s := batch(t, New(listen(t, "udp4", "127.0.0.1:0")))
		s.gso.Store(s.gso.Load() && gso)
		ru := listen(t, "udp4", "127.0.0.1:0")
		ru.SetReadBuffer(4 << 20)
		ru.SetReadDeadline(time.Now().Add(safety))
		r := batch(t, New(ru))
		if !tc.gro {
			r.setGRO(false)
		}
		out := equalBatch(batchSize, 1400, r.LocalAddr())
		in := make([]Packet, batchSize)
		for i := range in {
			in[i].Buf = make([]byte, 1500)
		}
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := s.WriteBatch(out); err != nil {
				t.Fatal(err)
			}
			for got := 0; got < len(out); {
				n, err := r.ReadBatch(in)
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
		})
		if allocs != 0 {
			t.Errorf("gso=%v gro=%v: %.1f allocations per batch round trip, want 0", s.gso.Load(), r.gro, allocs)
		}
	}
}

func TestSockaddrRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		v6   bool
		in   string
		want string
	}{
		{false, "192.0.2.1:80", "192.0.2.1:80"},
		{false, "[::ffff:192.0.2.1]:80", "192.0.2.1:80"},
		{true, "192.0.2.1:65535", "192.0.2.1:65535"},
		{true, "[2001:db8::1]:1", "[2001:db8::1]:1"},
		{true, "[fe80::1%7]:9", "[fe80::1%7]:9"},
	} {
		c := &batchConn{v6: tc.v6}
		var sa unix.RawSockaddrInet6
		if _, err := c.putSockaddr(&sa, netip.MustParseAddrPort(tc.in)); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		got := parseSockaddr(&sa)
		want := netip.MustParseAddrPort(tc.want)
		if ifi, err := net.InterfaceByIndex(7); err == nil && want.Addr().Zone() != "" {
			want = netip.AddrPortFrom(want.Addr().WithZone(ifi.Name), want.Port())
		}
		if got != want {
			t.Errorf("v6=%v %s: round trip gave %v, want %v", tc.v6, tc.in, got, want)
		}
	}
}

// FuzzSockaddr decodes arbitrary sockaddr bytes, as the kernel might leave
// them, and checks that decoding never panics and that valid addresses
// survive encoding and decoding.
func FuzzSockaddr(f *testing.F) {
	f.Add([]byte{2, 0, 0, 80, 192, 0, 2, 1}, false)
	f.Add([]byte{10, 0, 1, 187, 0, 0, 0, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, true)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, raw []byte, v6 bool) {
		var sa unix.RawSockaddrInet6
		b := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(&sa))
		copy(b[:], raw)
		sa.Scope_id = 0 // interface lookups are slow and not under test
		ap := parseSockaddr(&sa)
		if !ap.IsValid() || ap.Port() == 0 {
			return
		}
		c := &batchConn{v6: v6}
		var out unix.RawSockaddrInet6
		if _, err := c.putSockaddr(&out, ap); err != nil {
			if v6 || !ap.Addr().Is6() {
				t.Fatalf("putSockaddr(%v) on v6=%v: %v", ap, v6, err)
			}
			return
		}
		if got := parseSockaddr(&out); got != ap {
			t.Fatalf("round trip %v -> %v", ap, got)
		}
	})
}

// FuzzPack checks GSO coalescing on arbitrary batches: messages cover the
// packets in order, a message is a run to one address whose segments are
// equal-sized but for a shorter last one, and the kernel's limits hold.
func FuzzPack(f *testing.F) {
	f.Add([]byte{10, 10, 10, 5, 10, 0, 3, 3, 3}, []byte{0, 0, 0, 0, 1, 1, 0, 0, 0})
	f.Add(make([]byte, 100), make([]byte, 100))
	f.Add([]byte{255, 255, 255, 255, 255, 255}, []byte{2, 2, 2, 2, 2, 2})
	addrs := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:1"),
		netip.MustParseAddrPort("192.0.2.2:1"),
		netip.MustParseAddrPort("192.0.2.1:2"),
	}
	f.Fuzz(func(t *testing.T, sizes, dests []byte) {
		buf := make([]byte, 65536)
		var pkts []Packet
		for i, s := range sizes {
			n := int(s) * 8
			d := 0
			if i < len(dests) {
				d = int(dests[i]) % len(addrs)
			}
			if s == 255 {
				n = 4000 // large enough to hit the GSO byte limit
			}
			pkts = append(pkts, Packet{Buf: buf[:n], N: n, Addr: addrs[d]})
		}
		c := &batchConn{}
		c.gso.Store(true)
		w := newMmsg(batchSize)
		for len(pkts) > 0 {
			nmsg, err := c.pack(w, pkts, true)
			if err != nil || nmsg == 0 {
				t.Fatalf("pack: %d messages, %v", nmsg, err)
			}
			k := 0
			for m := range nmsg {
				segs := w.npkts[m]
				if segs < 1 || segs > maxGSOSegments {
					t.Fatalf("message with %d segments", segs)
				}
				run := pkts[k : k+segs]
				total := 0
				for j, p := range run {
					total += p.N
					if p.Addr != run[0].Addr {
						t.Fatalf("message mixes addresses")
					}
					if segs > 1 && (p.N > run[0].N || p.N == 0 || (j < segs-1 && p.N != run[0].N)) {
						t.Fatalf("bad segment sizes in message: %d of %d", p.N, run[0].N)
					}
				}
				if segs > 1 && total > maxGSOBytes {
					t.Fatalf("GSO message of %d bytes", total)
				}
				if got := int(w.hs[m].Hdr.Iovlen); got != segs {
					t.Fatalf("iovlen %d, want %d", got, segs)
				}
				k += segs
			}
			if k > batchSize {
				t.Fatalf("%d packets in one call", k)
			}
			pkts = pkts[k:]
		}
	})
}

// groPair returns a GSO sender and a GRO receiver over IPv4 loopback,
// skipping the test if the kernel lacks either.
func groPair(t *testing.T) (s, r *batchConn, ru *net.UDPConn) {
	t.Helper()
	s = batch(t, New(listen(t, "udp4", "127.0.0.1:0")))
	if !s.gso.Load() {
		t.Skip("kernel without UDP_SEGMENT")
	}
	ru = listen(t, "udp4", "127.0.0.1:0")
	ru.SetReadBuffer(4 << 20)
	ru.SetReadDeadline(time.Now().Add(safety))
	r = batch(t, New(ru))
	if !r.gro {
		t.Skip("kernel without UDP_GRO")
	}
	return s, r, ru
}

// readInOrder reads len(sent) packets from r in slices of k packets and
// checks that they are sent's, intact and in order.
func readInOrder(t *testing.T, r Conn, from netip.AddrPort, sent []Packet, k, capacity int) {
	t.Helper()
	bufs := make([]Packet, k)
	for i := range bufs {
		bufs[i].Buf = make([]byte, capacity)
	}
	for got := 0; got < len(sent); {
		n, err := r.ReadBatch(bufs)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d packets: %v", got, len(sent), err)
		}
		if n < 1 || n > k {
			t.Fatalf("ReadBatch returned %d of at most %d", n, k)
		}
		for _, p := range bufs[:n] {
			if got == len(sent) {
				t.Fatalf("more packets than the %d sent", len(sent))
			}
			want := sent[got].Buf[:sent[got].N]
			want = want[:min(len(want), capacity)]
			if p.Addr != from {
				t.Errorf("packet %d from %v, want %v", got, p.Addr, from)
			}
			if !bytes.Equal(p.Buf[:p.N], want) {
				t.Fatalf("packet %d: got %d bytes (seq %d), want %d bytes of seq %d",
					got, p.N, binary.BigEndian.Uint16(p.Buf), len(want), got)
			}
			got++
		}
	}
}

// TestGRO sends GSO bursts and reads them back coalesced: every datagram
// must come out on its own, intact and in order.
func TestGRO(t *testing.T) {
	s, r, _ := groPair(t)
	pkts := equalBatch(100, 1000, r.LocalAddr())
	pkts[99].N = 500 // a short tail segment
	if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	readInOrder(t, r, s.LocalAddr(), pkts, batchSize, 2048)
	if r.groMsg == 0 {
		t.Error("no coalesced message received")
	}
	if r.g.msgs != 0 || r.g.cur != 0 {
		t.Errorf("buffers not empty after reading everything: %+v", r.g.msgs)
	}
}

// TestGROMixed reads runs of different sizes, some coalesced and some not.
func TestGROMixed(t *testing.T) {
	s, r, _ := groPair(t)
	pkts := mixedBatch([]netip.AddrPort{r.LocalAddr()})
	// Empty and single datagrams between the runs.
	pkts = append(pkts, Packet{Buf: payload(64, 2), N: 2, Addr: r.LocalAddr()})
	pkts = append(pkts, equalBatch(3, 1400, r.LocalAddr())...)
	for i := 65; i < len(pkts); i++ {
		pkts[i].Buf = payload(i, 1400)
	}
	if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	readInOrder(t, r, s.LocalAddr(), pkts, batchSize, 2048)
	if r.groMsg == 0 {
		t.Error("no coalesced message received")
	}
}

// TestGRORemainder reads coalesced messages into fewer Packets than they
// hold: the rest must come out of later calls, in order.
func TestGRORemainder(t *testing.T) {
	for _, k := range []int{1, 3, 7, 64} {
		s, r, _ := groPair(t)
		pkts := equalBatch(150, 1200, r.LocalAddr())
		if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		readInOrder(t, r, s.LocalAddr(), pkts, k, 1500)
		// A second burst after the buffers emptied.
		if _, err := s.WriteBatch(pkts[:20]); err != nil {
			t.Fatal(err)
		}
		readInOrder(t, r, s.LocalAddr(), pkts[:20], k, 1500)
	}
}

// TestGROTruncation reads coalesced datagrams into Packets smaller than
// they are: each is cut to its Packet, and none is lost.
func TestGROTruncation(t *testing.T) {
	s, r, _ := groPair(t)
	pkts := equalBatch(40, 1000, r.LocalAddr())
	if _, err := s.WriteBatch(pkts); err != nil {
		t.Fatal(err)
	}
	readInOrder(t, r, s.LocalAddr(), pkts, 16, 100)
}

// TestGROOff checks the fallback: with UDP_GRO off, GSO sends arrive one
// datagram per message and ReadBatch fills the caller's buffers directly.
func TestGROOff(t *testing.T) {
	s, r, _ := groPair(t)
	if err := r.setGRO(false); err != nil {
		t.Fatal(err)
	}
	pkts := equalBatch(100, 1000, r.LocalAddr())
	if _, err := s.WriteBatch(pkts); err != nil {
		t.Fatal(err)
	}
	readInOrder(t, r, s.LocalAddr(), pkts, 5, 1500)
	if r.groMsg != 0 {
		t.Errorf("GRO path used with GRO off")
	}
}

// FuzzGROSegmentSize parses arbitrary control data, and control data with
// a UDP_GRO message after arbitrary others.
func FuzzGROSegmentSize(f *testing.F) {
	f.Add([]byte{}, uint16(1400), uint8(0))
	f.Add(make([]byte, 40), uint16(1), uint8(3))
	f.Add([]byte{20, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 104, 0, 0, 0, 120, 5, 0, 0}, uint16(0), uint8(1))
	f.Fuzz(func(t *testing.T, raw []byte, size uint16, others uint8) {
		groSegmentSize(raw) // must not panic

		// others cmsgs of other levels, then the UDP_GRO one.
		var oob []byte
		put := func(level, typ int32, data []byte) {
			h := make([]byte, unix.CmsgSpace(len(data)))
			c := (*unix.Cmsghdr)(unsafe.Pointer(&h[0]))
			c.Level, c.Type = level, typ
			c.SetLen(unix.CmsgLen(len(data)))
			copy(h[unix.CmsgLen(0):], data)
			oob = append(oob, h...)
		}
		for i := range int(others % 4) {
			put(unix.SOL_IP, int32(i), raw[:min(len(raw), 13)])
		}
		var d [4]byte
		binary.NativeEndian.PutUint32(d[:], uint32(size))
		put(unix.IPPROTO_UDP, unix.UDP_GRO, d[:])
		if got := groSegmentSize(oob); got != int(size) {
			t.Fatalf("segment size %d, want %d", got, size)
		}
		// Cut short, it must not be found beyond its bounds.
		if got := groSegmentSize(oob[:len(oob)-1]); got != 0 && got != int(size) {
			t.Fatalf("truncated control data gave %d", got)
		}
	})
}

// FuzzGRODrain splits arbitrary coalesced messages into Packets of
// arbitrary capacities: the output is each message's segments in order,
// each cut to its Packet.
func FuzzGRODrain(f *testing.F) {
	f.Add([]byte{10, 3, 0, 0, 7, 7}, []byte{5, 2, 9})
	f.Add([]byte{255, 255, 1, 0}, []byte{1})
	f.Fuzz(func(t *testing.T, msgs, caps []byte) {
		if len(caps) == 0 {
			return
		}
		var g groState
		g.buf = make([]byte, groSlots*groSlotSize)
		var want [][]byte // the segments, in order
		for i := 0; i+1 < len(msgs) && g.msgs < groSlots; i += 2 {
			m := g.msgs
			total, seg := int(msgs[i])*37, int(msgs[i+1])*5
			for j := range total {
				g.buf[m*groSlotSize+j] = byte(m*31 + j)
			}
			g.lens[m], g.segs[m] = total, seg
			g.addrs[m] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(m)}), 1)
			step := seg
			if step <= 0 || step > total {
				step = total
			}
			for off := 0; ; off += step {
				want = append(want, g.buf[m*groSlotSize+off:m*groSlotSize+min(off+step, total)])
				if off+step >= total {
					break
				}
			}
			g.msgs++
		}
		pkts := make([]Packet, len(caps))
		for i, c := range caps {
			pkts[i].Buf = make([]byte, int(c)*7)
		}
		lend := caps[0]%2 == 1
		got := 0
		for g.msgs > 0 {
			n := g.drain(pkts, lend)
			if n < 1 || n > len(pkts) {
				t.Fatalf("drain gave %d packets into %d", n, len(pkts))
			}
			for _, p := range pkts[:n] {
				w := want[got]
				if lend {
					w = w[:min(len(w), LendSize)]
				} else {
					w = w[:min(len(w), cap(p.Buf))]
				}
				if !bytes.Equal(p.Buf[:p.N], w) {
					t.Fatalf("packet %d: %d bytes, want %d", got, p.N, len(w))
				}
				got++
			}
		}
		if got != len(want) {
			t.Fatalf("%d packets, want %d", got, len(want))
		}
	})
}

// TestLendBatch reads bursts, coalesced or not, as slices of the read
// state, and checks that a reader waiting on an empty socket has given
// its read state back.
func TestLendBatch(t *testing.T) {
	for _, gro := range []bool{true, false} {
		s, r, ru := groPair(t)
		if !gro {
			if err := r.setGRO(false); err != nil {
				t.Fatal(err)
			}
		}
		pkts := equalBatch(100, 1000, r.LocalAddr())
		big := Packet{Buf: payload(100, LendSize+500), N: LendSize + 500, Addr: r.LocalAddr()}
		pkts = append(pkts, big)
		if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		in := make([]Packet, 7)
		for got := 0; got < len(pkts); {
			n, err := r.LendBatch(in)
			if err != nil {
				t.Fatalf("gro=%v: LendBatch after %d packets: %v", gro, got, err)
			}
			for _, p := range in[:n] {
				want := pkts[got].Buf[:pkts[got].N]
				want = want[:min(len(want), LendSize)]
				if p.N != len(p.Buf) || !bytes.Equal(p.Buf, want) || p.Addr != s.LocalAddr() {
					t.Fatalf("gro=%v: packet %d: %d bytes, want %d", gro, got, p.N, len(want))
				}
				got++
			}
		}
		if r.rs == nil {
			t.Fatalf("gro=%v: no read state while packets are in hand", gro)
		}
		ru.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := r.LendBatch(in); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("gro=%v: read of an empty socket: %v", gro, err)
		}
		if r.rs != nil || r.g.buf != nil {
			t.Errorf("gro=%v: an idle reader holds its read state", gro)
		}
	}
}

// TestPacketDst: a socket bound to the unspecified address learns which
// local address each datagram came to, with and without GRO, on IPv4 and
// dual-stack IPv6 sockets.
func TestPacketDst(t *testing.T) {
	for _, tc := range []struct {
		network, bind string
		gro           bool
	}{{"udp4", "0.0.0.0:0", true}, {"udp4", "0.0.0.0:0", false}, {"udp", "[::]:0", true}, {"udp", "[::]:0", false}} {
		ru := listen(t, tc.network, tc.bind)
		ru.SetReadDeadline(time.Now().Add(safety))
		r := batch(t, New(ru))
		if !tc.gro {
			r.setGRO(false)
		}
		s := New(listen(t, "udp4", "127.0.0.1:0"))
		to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), r.LocalAddr().Port())
		if _, err := s.WriteBatch(equalBatch(2, 100, to)); err != nil {
			t.Fatal(err)
		}
		in := []Packet{{Buf: make([]byte, 1500)}, {Buf: make([]byte, 1500)}}
		for got := 0; got < 2; {
			n, err := r.ReadBatch(in[got:])
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range in[got : got+n] {
				if p.Dst != to.Addr() {
					t.Errorf("%s %s gro=%v: Dst %v, want %v", tc.network, tc.bind, r.gro, p.Dst, to.Addr())
				}
			}
			got += n
		}
	}
}

// TestReadStateGrows: a reader starts small and takes a full read state
// while a burst keeps filling the small one.
func TestReadStateGrows(t *testing.T) {
	for _, gro := range []bool{true, false} {
		s, r, _ := groPair(t)
		if !gro {
			if err := r.setGRO(false); err != nil {
				t.Fatal(err)
			}
		}
		pkts := equalBatch(300, 1000, r.LocalAddr())
		if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		in := make([]Packet, batchSize)
		small, full := false, false
		for got := 0; got < len(pkts); {
			n, err := r.LendBatch(in)
			if err != nil {
				t.Fatalf("gro=%v: LendBatch after %d packets: %v", gro, got, err)
			}
			got += n
			small = small || r.rs.msgs == smallMsgs
			full = full || r.rs.msgs == batchSize
		}
		if !small || !full {
			t.Errorf("gro=%v: small read state used %v, full one %v; want both", gro, small, full)
		}
	}
}

// TestReadStateStaysSmall: a caller with room for fewer datagrams than the
// small read state holds never makes it take the full one.
func TestReadStateStaysSmall(t *testing.T) {
	s, r, _ := groPair(t)
	if err := r.setGRO(false); err != nil {
		t.Fatal(err)
	}
	pkts := equalBatch(200, 1000, r.LocalAddr())
	if n, err := s.WriteBatch(pkts); err != nil || n != len(pkts) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	in := make([]Packet, 8)
	for got := 0; got < len(pkts); {
		n, err := r.LendBatch(in)
		if err != nil {
			t.Fatalf("LendBatch after %d packets: %v", got, err)
		}
		got += n
		if r.rs.msgs != smallMsgs {
			t.Fatalf("a full read state for a caller of 8 packets")
		}
	}
}
