//go:build linux

package sockio

import (
	"net"
	"os"
	"testing"
)

// TestSetReadBuffer: the size granted is reported, and as root it may
// exceed net.core.rmem_max (SO_RCVBUFFORCE).
func TestSetReadBuffer(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := SetReadBuffer(pc, 64<<10); got < 64<<10 {
		t.Fatalf("SetReadBuffer(64 KiB) granted %d", got)
	}
	if os.Geteuid() != 0 {
		return
	}
	const want = 64 << 20 // above any default rmem_max
	if got := SetReadBuffer(pc, want); got < want {
		t.Fatalf("as root, SetReadBuffer(%d) granted %d", want, got)
	}
}

// TestDrops counts the datagrams a full receive buffer dropped.
func TestDrops(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.SetReadBuffer(1); err != nil { // the kernel's least
		t.Fatal(err)
	}
	if n := Drops(pc); n != 0 {
		t.Fatalf("Drops = %d before any traffic", n)
	}
	snd, err := net.DialUDP("udp4", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	b := make([]byte, 1400)
	for range 200 {
		snd.Write(b)
	}
	if n := Drops(pc); n == 0 {
		t.Fatal("Drops = 0 after overflowing the buffer")
	}
	if q, size, _ := Backlog(pc); q <= 0 || size <= 0 {
		t.Fatalf("Backlog: %d bytes queued in %d after overflowing", q, size)
	}
}
