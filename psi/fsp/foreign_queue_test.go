package fsp

import (
	"encoding/binary"
	"net"
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
		for len(ft.foreignQueue()) < end-first && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := len(ft.foreignQueue()); got < end-first {
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
	if b := ft.foreignBytes.Load(); b != 0 {
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
	if n, b := len(ft.foreignQueue()), ft.foreignBytes.Load(); n != want || b > foreignQueueBytes {
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
	ft.mu.Lock()
	q := ft.foreign
	ft.mu.Unlock()
	if q != nil || ft.foreignBytes.Load() != 0 {
		t.Fatalf("queue made (%v), %d bytes held with no reader", q != nil, ft.foreignBytes.Load())
	}
	nc := ft.NonFSPConn()
	if got := sendForeign(t, ft, cl, ft.LocalAddr(), 0, 8, 100); got != 8 {
		t.Fatalf("%d of 8 queued for a reader", got)
	}
	nc.Close()
	if n, b := len(ft.foreignQueue()), ft.foreignBytes.Load(); n != 0 || b != 0 {
		t.Fatalf("%d datagrams, %d bytes held once the reader closed", n, b)
	}
	for range 64 {
		cl.WriteTo(p, ft.LocalAddr())
	}
	readLoopTook(t, l, ccfg)
	if n, b := len(ft.foreignQueue()), ft.foreignBytes.Load(); n != 0 || b != 0 {
		t.Fatalf("%d datagrams, %d bytes held with no reader", n, b)
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
