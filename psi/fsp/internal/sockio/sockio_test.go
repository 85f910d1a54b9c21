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

	"github.com/postsockets/postsockets/post"
)

// safety bounds reads so a lost datagram fails the test instead of hanging
// it; it is not a timing assertion.
const safety = 10 * time.Second

// wrapper hides the *net.UDPConn so New takes the generic path.
type wrapper struct{ net.PacketConn }

// kinds are the ways to make a Conn from a UDP socket under test.
var kinds = map[string]func(*net.UDPConn) Conn{
	"default": func(u *net.UDPConn) Conn { return New(u) },
	"generic": func(u *net.UDPConn) Conn { return New(wrapper{u}) },
	"generic-addrport": func(u *net.UDPConn) Conn {
		return New(struct {
			net.PacketConn
			addrPortConn
		}{u, u})
	},
}

func listen(t testing.TB, network, addr string) *net.UDPConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Skipf("resolve %s %s: %v", network, addr, err)
	}
	u, err := net.ListenUDP(network, ua)
	if err != nil {
		if network == "udp6" {
			t.Skipf("no IPv6: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// payload returns packet seq's contents: the sequence number, then a
// pattern derived from it.
func payload(seq, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint16(b, uint16(seq))
	for i := 2; i < size; i++ {
		b[i] = byte(seq*7 + i)
	}
	return b
}

// mixedBatch returns 64 packets in runs of eight to alternating receivers,
// each run mostly of one size with a short and a long packet in it, so GSO
// coalescing has runs to find and boundaries to respect.
func mixedBatch(dests []netip.AddrPort) []Packet {
	var pkts []Packet
	for i := range 64 {
		run, j := i/8, i%8
		size := 200 + 150*run
		switch j {
		case 5:
			size /= 2
		case 7:
			size++
		}
		b := payload(i, size)
		pkts = append(pkts, Packet{Buf: b, N: len(b), Addr: dests[run%len(dests)]})
	}
	return pkts
}

// receive reads until want packets have arrived at c and checks each
// against sent.
func receive(t *testing.T, c Conn, u *net.UDPConn, from netip.AddrPort, sent []Packet, want int) {
	t.Helper()
	u.SetReadDeadline(time.Now().Add(safety))
	bufs := make([]Packet, c.MaxBatch())
	for i := range bufs {
		bufs[i].Buf = make([]byte, 2048)
	}
	seen := make(map[int]bool)
	for len(seen) < want {
		n, err := c.ReadBatch(bufs)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d packets: %v", len(seen), want, err)
		}
		if n < 1 || n > len(bufs) {
			t.Fatalf("ReadBatch returned %d", n)
		}
		for _, p := range bufs[:n] {
			if p.Addr != from {
				t.Errorf("packet from %v, want %v", p.Addr, from)
			}
			if p.N < 2 {
				t.Fatalf("short packet of %d bytes", p.N)
			}
			seq := int(binary.BigEndian.Uint16(p.Buf))
			if seq >= len(sent) || seen[seq] {
				t.Fatalf("unexpected or duplicate packet %d", seq)
			}
			seen[seq] = true
			if w := sent[seq].Buf[:sent[seq].N]; !bytes.Equal(p.Buf[:p.N], w) {
				t.Errorf("packet %d: got %d bytes, want %d bytes intact", seq, p.N, len(w))
			}
		}
	}
}

func testRoundTrip(t *testing.T, network, host string, mk func(*net.UDPConn) Conn) {
	su := listen(t, network, host+":0")
	s := mk(su)
	var (
		rs  []Conn
		rus []*net.UDPConn
		ds  []netip.AddrPort
	)
	for range 2 {
		u := listen(t, network, host+":0")
		c := mk(u)
		rs, rus, ds = append(rs, c), append(rus, u), append(ds, c.LocalAddr())
	}
	pkts := mixedBatch(ds)
	n, err := s.WriteBatch(pkts)
	if err != nil || n != len(pkts) {
		t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(pkts))
	}
	for i := range rs {
		receive(t, rs[i], rus[i], s.LocalAddr(), pkts, len(pkts)/2)
	}
}

func TestRoundTripIPv4(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) { testRoundTrip(t, "udp4", "127.0.0.1", mk) })
	}
}

func TestRoundTripIPv6(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) { testRoundTrip(t, "udp6", "[::1]", mk) })
	}
}

// TestDualStack checks that an IPv6 socket accepting IPv4 reports and
// takes plain IPv4 addresses.
func TestDualStack(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			du, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
			if err != nil {
				t.Skipf("no dual-stack socket: %v", err)
			}
			defer du.Close()
			d := mk(du)
			v4u := listen(t, "udp4", "127.0.0.1:0")
			v4 := mk(v4u)
			dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), d.LocalAddr().Port())

			pkts := []Packet{{Buf: payload(0, 100), N: 100, Addr: dst}}
			if _, err := v4.WriteBatch(pkts); err != nil {
				t.Fatal(err)
			}
			receive(t, d, du, v4.LocalAddr(), pkts, 1)

			pkts = []Packet{{Buf: payload(0, 300), N: 300, Addr: v4.LocalAddr()}, {Buf: payload(1, 300), N: 300, Addr: v4.LocalAddr()}}
			if _, err := d.WriteBatch(pkts); err != nil {
				t.Fatal(err)
			}
			receive(t, v4, v4u, dst, pkts, 2)
		})
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			c := mk(listen(t, "udp4", "127.0.0.1:0"))
			errc := make(chan error)
			go func() {
				_, err := c.ReadBatch([]Packet{{Buf: make([]byte, 1500)}})
				errc <- err
			}()
			// Whether Close lands before or during ReadBatch, the read fails.
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			err := <-errc
			if !errors.Is(err, post.ErrClosed) || !errors.Is(err, net.ErrClosed) {
				t.Errorf("ReadBatch after Close: %v, want ErrClosed", err)
			}
			_, err = c.WriteBatch([]Packet{{Buf: make([]byte, 10), N: 10, Addr: c.LocalAddr()}})
			if !errors.Is(err, post.ErrClosed) {
				t.Errorf("WriteBatch after Close: %v, want ErrClosed", err)
			}
		})
	}
}

func TestReadDeadline(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			u := listen(t, "udp4", "127.0.0.1:0")
			c := mk(u)
			u.SetReadDeadline(time.Now().Add(-time.Second))
			_, err := c.ReadBatch([]Packet{{Buf: make([]byte, 1500)}})
			if !errors.Is(err, post.ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("ReadBatch past deadline: %v, want ErrTimeout", err)
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			u := listen(t, "udp4", "127.0.0.1:0")
			c := mk(u)
			big := payload(1, 1400)
			if _, err := c.WriteBatch([]Packet{{Buf: big, N: len(big), Addr: c.LocalAddr()}}); err != nil {
				t.Fatal(err)
			}
			u.SetReadDeadline(time.Now().Add(safety))
			p := []Packet{{Buf: make([]byte, 50, 100)}} // capacity is what counts
			if n, err := c.ReadBatch(p); err != nil || n != 1 {
				t.Fatalf("ReadBatch = %d, %v", n, err)
			}
			if p[0].N != 100 || !bytes.Equal(p[0].Buf[:100], big[:100]) {
				t.Errorf("truncated read: N = %d", p[0].N)
			}
		})
	}
}

func TestEmptyBatches(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			c := mk(listen(t, "udp4", "127.0.0.1:0"))
			if n, err := c.ReadBatch(nil); n != 0 || err != nil {
				t.Errorf("ReadBatch(nil) = %d, %v", n, err)
			}
			if n, err := c.WriteBatch(nil); n != 0 || err != nil {
				t.Errorf("WriteBatch(nil) = %d, %v", n, err)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			u := listen(t, "udp4", "127.0.0.1:0")
			c := mk(u)
			good := Packet{Buf: payload(0, 10), N: 10, Addr: c.LocalAddr()}
			for _, bad := range []Packet{
				{Buf: make([]byte, 10), N: 10},
				{Buf: make([]byte, 10), N: 10, Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0)},
				{Buf: make([]byte, 10), N: 11, Addr: c.LocalAddr()},
				{Buf: make([]byte, 10), N: -1, Addr: c.LocalAddr()},
			} {
				n, err := c.WriteBatch([]Packet{good, good, bad, good})
				if err == nil || n != 2 {
					t.Errorf("WriteBatch with bad packet %+v = %d, %v; want 2 and an error", bad, n, err)
				}
			}
			// The two good packets before each bad one were sent.
			u.SetReadDeadline(time.Now().Add(safety))
			for i := range 8 {
				p := []Packet{{Buf: make([]byte, 100)}}
				if _, err := c.ReadBatch(p); err != nil || p[0].N != 10 {
					t.Fatalf("packet %d: N = %d, %v", i, p[0].N, err)
				}
			}
			if name == "default" {
				v6 := netip.MustParseAddrPort("[::1]:9")
				_, err := c.WriteBatch([]Packet{{Buf: make([]byte, 10), N: 10, Addr: v6}})
				if !errors.Is(err, post.ErrNotSupported) {
					t.Errorf("IPv6 destination on IPv4 socket: %v", err)
				}
			}
		})
	}
}

func TestAddrPortOf(t *testing.T) {
	ap := netip.MustParseAddrPort("192.0.2.1:5")
	for _, a := range []net.Addr{
		net.UDPAddrFromAddrPort(ap),
		net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::ffff:192.0.2.1]:5")),
		&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5},
	} {
		if got := addrPortOf(a); got != ap {
			t.Errorf("addrPortOf(%v) = %v, want %v", a, got, ap)
		}
	}
	if got := addrPortOf(nil); got.IsValid() {
		t.Errorf("addrPortOf(nil) = %v", got)
	}
	if got := addrPortOf(&net.UnixAddr{Name: "/x"}); got.IsValid() {
		t.Errorf("addrPortOf(unix) = %v", got)
	}
}

// benchPair returns a sender and receiver over IPv4 loopback.
func benchPair(b *testing.B, mk func(*net.UDPConn) Conn) (s, r Conn, ru *net.UDPConn) {
	su := listen(b, "udp4", "127.0.0.1:0")
	ru = listen(b, "udp4", "127.0.0.1:0")
	ru.SetReadBuffer(4 << 20)
	return mk(su), mk(ru), ru
}

const benchBatch = 64

// benchmarkConn sends batches of 64 packets of 1400 bytes and reads them
// back, reporting packets per second.
func benchmarkConn(b *testing.B, mk func(*net.UDPConn) Conn) {
	s, r, ru := benchPair(b, mk)
	out := make([]Packet, benchBatch)
	for i := range out {
		out[i] = Packet{Buf: make([]byte, 1400), N: 1400, Addr: r.LocalAddr()}
	}
	in := make([]Packet, benchBatch)
	for i := range in {
		in[i].Buf = make([]byte, 1500)
	}
	ru.SetReadDeadline(time.Now().Add(time.Hour))
	b.SetBytes(benchBatch * 1400)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.WriteBatch(out); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < benchBatch; {
			n, err := r.ReadBatch(in)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "pkts/s")
}

func BenchmarkConn(b *testing.B) {
	for name, mk := range kinds {
		b.Run(name, func(b *testing.B) { benchmarkConn(b, mk) })
	}
}

// BenchmarkPlainLoop is the baseline: WriteToUDPAddrPort and
// ReadFromUDPAddrPort, one datagram per system call.
func BenchmarkPlainLoop(b *testing.B) {
	su := listen(b, "udp4", "127.0.0.1:0")
	ru := listen(b, "udp4", "127.0.0.1:0")
	ru.SetReadBuffer(4 << 20)
	dst := ru.LocalAddr().(*net.UDPAddr).AddrPort()
	out := make([]byte, 1400)
	in := make([]byte, 1500)
	ru.SetReadDeadline(time.Now().Add(time.Hour))
	b.SetBytes(benchBatch * 1400)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for range benchBatch {
			if _, err := su.WriteToUDPAddrPort(out, dst); err != nil {
				b.Fatal(err)
			}
		}
		for range benchBatch {
			if _, _, err := ru.ReadFromUDPAddrPort(in); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "pkts/s")
}

// TestConcurrentReadWrite runs a reader and a writer goroutine on one Conn
// against an echo peer, keeping at most one batch in flight so that no
// datagram is dropped.
func TestConcurrentReadWrite(t *testing.T) {
	const total, window = 1024, 64
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			au, bu := listen(t, "udp4", "127.0.0.1:0"), listen(t, "udp4", "127.0.0.1:0")
			a, b := mk(au), mk(bu)
			au.SetReadDeadline(time.Now().Add(safety))
			bu.SetReadDeadline(time.Now().Add(safety))

			echoErr := make(chan error, 1)
			go func() { // echo: read a batch, send it back
				in := make([]Packet, b.MaxBatch())
				for i := range in {
					in[i].Buf = make([]byte, 1500)
				}
				for got := 0; got < total; {
					n, err := b.ReadBatch(in)
					if err != nil {
						echoErr <- err
						return
					}
					for i := range in[:n] {
						in[i].Addr = a.LocalAddr()
					}
					if _, err := b.WriteBatch(in[:n]); err != nil {
						echoErr <- err
						return
					}
					got += n
				}
				echoErr <- nil
			}()

			credit := make(chan struct{}, window)
			for range window {
				credit <- struct{}{}
			}
			writeErr := make(chan error, 1)
			go func() {
				out := make([]Packet, 8)
				for seq := 0; seq < total; seq += len(out) {
					for i := range out {
						<-credit
						out[i] = Packet{Buf: payload(seq+i, 1000), N: 1000, Addr: b.LocalAddr()}
					}
					if _, err := a.WriteBatch(out); err != nil {
						writeErr <- err
						return
					}
				}
				writeErr <- nil
			}()

			in := make([]Packet, a.MaxBatch())
			for i := range in {
				in[i].Buf = make([]byte, 1500)
			}
			seen := make([]bool, total)
			for got := 0; got < total; {
				n, err := a.ReadBatch(in)
				if err != nil {
					t.Fatalf("after %d echoes: %v", got, err)
				}
				for _, p := range in[:n] {
					seq := int(binary.BigEndian.Uint16(p.Buf))
					if p.N != 1000 || seq >= total || seen[seq] || !bytes.Equal(p.Buf[:p.N], payload(seq, 1000)) {
						t.Fatalf("bad echo: seq %d, %d bytes", seq, p.N)
					}
					seen[seq] = true
					credit <- struct{}{}
				}
				got += n
			}
			if err := <-writeErr; err != nil {
				t.Fatal(err)
			}
			if err := <-echoErr; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConcurrentWriters: WriteBatch from several goroutines at once on
// one Conn, each with runs of equal-sized packets (GSO where there is
// one), delivers every datagram intact.
func TestConcurrentWriters(t *testing.T) {
	const writers, each, batch = 4, 256, 16
	for name, mk := range kinds {
		t.Run(name, func(t *testing.T) {
			au, bu := listen(t, "udp4", "127.0.0.1:0"), listen(t, "udp4", "127.0.0.1:0")
			bu.SetReadBuffer(4 << 20)
			a := mk(au)
			bu.SetReadDeadline(time.Now().Add(safety))
			to := addrPortOf(bu.LocalAddr())
			errs := make(chan error, writers)
			for w := range writers {
				go func() {
					out := make([]Packet, batch)
					for seq := w * each; seq < (w+1)*each; seq += batch {
						for i := range out {
							out[i] = Packet{Buf: payload(seq+i, 1000), N: 1000, Addr: to}
						}
						if _, err := a.WriteBatch(out); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			seen := make([]bool, writers*each)
			buf := make([]byte, 1500)
			for range writers * each {
				n, _, err := bu.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatal(err)
				}
				seq := int(binary.BigEndian.Uint16(buf))
				if n != 1000 || seq >= len(seen) || seen[seq] || !bytes.Equal(buf[:n], payload(seq, 1000)) {
					t.Fatalf("bad datagram: seq %d, %d bytes", seq, n)
				}
				seen[seq] = true
			}
			for range writers {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
