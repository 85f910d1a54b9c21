package fsp

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// sendForeign sends n datagrams of size bytes that are not FSP's (a QUIC
// short header), numbered from first, from cl to to, in steps of at most
// 64 KiB (the test's socket has the kernel's default buffer), and after
// each waits until the transport's queue holds them all, up to 10 s; it
// returns how many it holds.
func sendForeign(t *testing.T, ft *Transport, cl *net.UDPConn, to net.Addr, first, n, size int) int {
	t.Helper()
	p := make([]byte, size)
	step := max(1, min(32, 64<<10/size))
	for i := first; i < first+n; i += step {
		end := min(i+step, first+n)
		for j := i; j < end; j++ {
			p[0] = 0x40
			binary.BigEndian.PutUint32(p[1:], uint32(j))
			if _, err := cl.WriteTo(p, to); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for held(ft) < end-first && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := held(ft); got < end-first {
			return got
		}
	}
	return n
}

// TestForeignBurstQueued: a burst of QUIC datagrams to a port FSP shares,
// arriving while QUIC is not reading, waits for it. Before, the queue
// held 64 datagrams, one batch of the read loop: the rest were dropped,
// where QUIC on a socket of its own had the socket's buffer.
func TestForeignBurstQueued(t *testing.T) {
	ft, _, _ := foreignListener(t)
	nc := ft.NonFSPConn()
	defer nc.Close()
	cl := mustUDP(t)
	const burst = 512
	if got := sendForeign(t, ft, cl, ft.LocalAddr(), 0, burst, 1200); got != burst {
		t.Fatalf("%d of a burst of %d datagrams queued", got, burst)
	}
	buf := make([]byte, 2000)
	for i := range burst {
		n, from, err := nc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1200 || binary.BigEndian.Uint32(buf[1:]) != uint32(i) || from.String() != cl.LocalAddr().String() {
			t.Fatalf("datagram %d: %d bytes, number %d, from %v", i, n, binary.BigEndian.Uint32(buf[1:]), from)
		}
	}
	if _, b := ft.foreign.held(); b != 0 {
		t.Fatalf("%d bytes still counted once all were read", b)
	}
}

// TestForeignQueueBytes: unread jumbo datagrams fill the queue only to
// foreignQueueBytes.
func TestForeignQueueBytes(t *testing.T) {
	ft, l, ccfg := foreignListener(t)
	nc := ft.NonFSPConn()
	defer nc.Close()
	cl := mustUDP(t)
	const size = 9000
	want := foreignQueueBytes / size
	if got := sendForeign(t, ft, cl, ft.LocalAddr(), 0, want, size); got != want {
		t.Fatalf("%d of %d datagrams queued", got, want)
	}
	// More are dropped.
	p := make([]byte, size)
	p[0] = 0x40
	for range 64 {
		cl.WriteTo(p, ft.LocalAddr())
		time.Sleep(time.Millisecond) // the test socket's buffer is small
	}
	readLoopTook(t, l, ccfg)
	if n, b := ft.foreign.held(); n != want || b > foreignQueueBytes {
		t.Fatalf("%d datagrams, %d bytes queued; want %d, at most %d bytes", n, b, want, foreignQueueBytes)
	}
}

// TestForeignUnreadNotHeld: a transport with no reader of non-FSP
// datagrams keeps none of them (before, it held the first 64, up to 576
// KiB, until it closed), and stops keeping them when its last reader
// closes.
func TestForeignUnreadNotHeld(t *testing.T) {
	ft, l, ccfg := foreignListener(t)
	cl := mustUDP(t)
	p := make([]byte, 9000)
	p[0] = 0x40
	for range 64 {
		cl.WriteTo(p, ft.LocalAddr())
	}
	readLoopTook(t, l, ccfg)
	if n, b := ft.foreign.held(); n != 0 || b != 0 {
		t.Fatalf("%d datagrams, %d bytes held with no reader", n, b)
	}
	nc := ft.NonFSPConn()
	if got := sendForeign(t, ft, cl, ft.LocalAddr(), 0, 8, 100); got != 8 {
		t.Fatalf("%d of 8 queued for a reader", got)
	}
	nc.Close()
	if n, b := ft.foreign.held(); n != 0 || b != 0 {
		t.Fatalf("%d datagrams, %d bytes held once the reader closed", n, b)
	}
	for range 64 {
		cl.WriteTo(p, ft.LocalAddr())
	}
	readLoopTook(t, l, ccfg)
	if n, b := ft.foreign.held(); n != 0 || b != 0 {
		t.Fatalf("%d datagrams, %d bytes held with no reader", n, b)
	}
}

// held returns the datagrams ft's queue of non-FSP datagrams holds.
func held(ft *Transport) int {
	n, _ := ft.foreign.held()
	return n
}

// TestForeignFairPerPrefix: while one /24 floods the shared port with
// junk faster than QUIC reads it, the datagrams of a client in another
// prefix still get into the queue, and come out next to the flood's, not
// behind it. Before, the queue was one channel: the flood's first 1,024
// datagrams filled it and the client's 8 were all dropped.
func TestForeignFairPerPrefix(t *testing.T) {
	ft, l, ccfg := foreignListener(t)
	ft.Conn.(*net.UDPConn).SetReadBuffer(socketBuffer) // the flood's 256 and the client's 8 at once
	nc := ft.NonFSPConn()
	defer nc.Close()
	flood, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 1, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	if got := sendForeign(t, ft, flood, ft.LocalAddr(), 0, foreignQueueLen, 100); got != foreignQueueLen {
		t.Fatalf("%d of %d junk datagrams queued", got, foreignQueueLen)
	}
	// The flood goes on, and the client sends among it.
	honest := mustUDP(t)
	p := make([]byte, 1200)
	p[0] = 0x40
	for i := range 8 {
		for range 32 {
			flood.WriteTo(p[:100], ft.LocalAddr())
		}
		p[1] = byte(i + 1)
		if _, err := honest.WriteTo(p, ft.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	readLoopTook(t, l, ccfg)
	buf := make([]byte, 2000)
	var got []int // the reads that returned the client's datagrams
	for i := range held(ft) {
		n, from, err := nc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if from.String() == honest.LocalAddr().String() {
			if n != 1200 || int(buf[1]) != len(got)+1 {
				t.Fatalf("the client's datagram %d: %d bytes, number %d", len(got)+1, n, buf[1])
			}
			got = append(got, i)
		}
	}
	if len(got) != 8 {
		t.Fatalf("%d of the client's 8 datagrams queued during a flood from another /24", len(got))
	}
	if last := got[len(got)-1]; last >= 16 {
		t.Errorf("the client's datagrams were reads %v: behind the flood, not served in turn", got)
	}
}

// foreignListener returns a transport listening on a socket of the test's
// own, the listener, and a client configuration for it.
func foreignListener(t *testing.T) (*Transport, *Listener, *Config) {
	t.Helper()
	scfg, ccfg := pair(t)
	ft := &Transport{Conn: mustUDP(t)}
	t.Cleanup(func() { ft.Close() })
	l, err := ft.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	return ft, l, ccfg
}

// readLoopTook returns once l's read loop has taken what was sent to it before:
// it runs a handshake with l from another socket.
func readLoopTook(t *testing.T, l *Listener, ccfg *Config) {
	t.Helper()
	cli, srv := dialAccept(t, testContext(t), &Transport{Conn: mustUDP(t)}, l, ccfg)
	cli.Close()
	srv.Close()
}

// TestForeignQueueBounds pushes datagrams of random sizes from a few
// prefixes: the queue stays within its bounds, a datagram from a prefix
// holding less than another always gets in, and pop serves the prefixes
// in turn.
func TestForeignQueueBounds(t *testing.T) {
	var q foreignQueue
	pfx := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("2001:db8::/48")}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		src := pfx[0] // the flood
		if i%50 == 0 {
			src = pfx[1+r.IntN(2)]
		}
		size := 1 + r.IntN(1500)
		if r.IntN(100) == 0 {
			size = 9000
		}
		q.mu.Lock()
		heaviest := 0
		for _, p := range pfx {
			heaviest = max(heaviest, q.q.Weight(p))
		}
		less := q.q.Weight(src) < heaviest
		full := q.q.Len() >= foreignQueueLen || q.q.Size()+size > foreignQueueBytes
		q.mu.Unlock()
		ok := q.push(src, foreignPacket{b: make([]byte, size)})
		if full && less && src != pfx[0] && !ok {
			t.Fatalf("push %d: a datagram of %v, holding less than the flood, was dropped", i, src)
		}
		if n, b := q.held(); n > foreignQueueLen || b > foreignQueueBytes {
			t.Fatalf("push %d: %d datagrams, %d bytes held", i, n, b)
		}
	}
	// Served in turn: no prefix twice in a row while another waits.
	var last netip.Prefix
	for {
		q.mu.Lock()
		waiting := q.q.Sources()
		next, p, ok := q.q.Pop()
		q.mu.Unlock()
		if !ok {
			break
		}
		if len(p.b) == 0 {
			t.Fatal("an empty datagram was served")
		}
		if waiting > 1 && next == last {
			t.Fatalf("%v served twice in a row while %d prefixes waited", next, waiting)
		}
		last = next
	}
	if n, b := q.held(); n != 0 || b != 0 || q.q.Sources() != 0 {
		t.Fatalf("%d datagrams, %d bytes, %d prefixes left once all were read", n, b, q.q.Sources())
	}
}

// BenchmarkForeignSpoofed: a full queue holding one datagram from each of
// 1,024 prefixes and a flood from ever new (spoofed) prefixes, each of
// whose datagrams pushes out another's: what a datagram costs the read
// loop.
func BenchmarkForeignSpoofed(b *testing.B) {
	var q foreignQueue
	pkt := foreignPacket{b: make([]byte, 100)}
	src := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), 0}), 24)
	}
	for i := range foreignQueueLen {
		q.push(src(i), pkt)
	}
	i := foreignQueueLen
	for b.Loop() {
		q.push(src(i), pkt)
		i++
	}
}
