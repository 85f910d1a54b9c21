//go:build linux

package fsp

import (
	"net"
	"os"
	"testing"

	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
	"golang.org/x/sys/unix"
)

// TestListenerRcvbufTuning: a listener's socket buffer grows while the
// socket drops datagrams that are nearly all for its connections, and
// goes back to socketBuffer once a window is more than a sixteenth
// handshakes or other unrouted datagrams.
func TestListenerRcvbufTuning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs SO_RCVBUFFORCE (root)")
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tr := &Transport{udp: pc}
	tr.rcvbuf = rcvbufTuner{on: true, size: socketBuffer}
	sockio.SetReadBuffer(pc, socketBuffer)

	tr.tuneRcvbuf(rcvbufWindow, 0) // no drops: stays
	if tr.rcvbuf.size != socketBuffer {
		t.Fatalf("grew to %d without drops", tr.rcvbuf.size)
	}
	tr.rcvbuf.drops-- // as if the socket had dropped one since
	tr.tuneRcvbuf(rcvbufWindow/2, 0)
	tr.tuneRcvbuf(rcvbufWindow/2, rcvbufForeign)
	if tr.rcvbuf.size != maxListenerBuffer {
		t.Fatalf("size %d after drops, want %d", tr.rcvbuf.size, maxListenerBuffer)
	}
	if got := rcvbufOf(t, pc); got < maxListenerBuffer {
		t.Fatalf("SO_RCVBUF %d, want at least %d", got, maxListenerBuffer)
	}
	tr.tuneRcvbuf(rcvbufWindow, rcvbufForeign+1) // a flood of handshakes
	if tr.rcvbuf.size != socketBuffer {
		t.Fatalf("size %d during handshakes, want %d", tr.rcvbuf.size, socketBuffer)
	}
	if got := rcvbufOf(t, pc); got >= maxListenerBuffer {
		t.Fatalf("SO_RCVBUF %d after shrinking", got)
	}
}

func rcvbufOf(t *testing.T, pc *net.UDPConn) int {
	rc, err := pc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc.Control(func(fd uintptr) { n, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}
