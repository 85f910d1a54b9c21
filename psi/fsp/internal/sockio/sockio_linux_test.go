//go:build linux

package sockio

import (
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	kinds["nogso"] = func(u *net.UDPConn) Conn {
		c := New(u)
		c.(*batchConn).gso = false
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
	if !s.gso {
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
	if s.gsoSends != 2 || !s.gsoOK {
		t.Errorf("GSO messages sent: %d, want 2", s.gsoSends)
	}
	receive(t, r, ru, s.LocalAddr(), pkts, len(pkts))
}

// TestGSOFallback makes the kernel refuse GSO: it rejects UDP_SEGMENT on a
// socket with checksums disabled (SO_NO_CHECK) with EINVAL. The packets must
// still arrive, one datagram each, and GSO must be turned off.
func TestGSOFallback(t *testing.T) {
	su := listen(t, "udp4", "127.0.0.1:0")
	s := batch(t, New(su))
	if !s.gso {
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
	if s.gso || s.gsoSends != 0 {
		t.Errorf("GSO still on (%v) after EINVAL, %d GSO sends", s.gso, s.gsoSends)
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
	if !s.gso {
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
	if !s.gso {
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
	for _, gso := range []bool{false, true} {
		s := batch(t, New(listen(t, "udp4", "127.0.0.1:0")))
		s.gso = s.gso && gso
		ru := listen(t, "udp4", "127.0.0.1:0")
		ru.SetReadDeadline(time.Now().Add(safety))
		r := New(ru)
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
			t.Errorf("gso=%v: %.1f allocations per batch round trip, want 0", s.gso, allocs)
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
		c := &batchConn{w: newMmsg(), gso: true}
		for len(pkts) > 0 {
			nmsg, err := c.pack(pkts, true)
			if err != nil || nmsg == 0 {
				t.Fatalf("pack: %d messages, %v", nmsg, err)
			}
			k := 0
			for m := range nmsg {
				segs := c.w.npkts[m]
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
				if got := int(c.w.hs[m].Hdr.Iovlen); got != segs {
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
