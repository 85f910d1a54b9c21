package fsp

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

// closedPort returns a loopback UDP address nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	return ap
}

// TestDialRefused dials a UDP port where nothing listens: the ICMP port
// unreachable ends the dial with post.ErrRefused instead of the handshake
// timeout (which would wrap post.ErrTimeout).
func TestDialRefused(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP errors are reported on Linux")
	}
	_, ccfg := pair(t)
	ctx := testContext(t)
	for _, name := range []string{"Dial", "Stack"} {
		addr := closedPort(t)
		start := time.Now()
		var err error
		if name == "Dial" {
			var c *Conn
			c, err = Dial(ctx, addr, ccfg)
			if c != nil {
				c.Close()
			}
		} else {
			s := &Stack{Base: ccfg}
			tr, e := s.Dial(ctx, addr, nil)
			if tr != nil {
				tr.Close()
			}
			err = e
		}
		if !errors.Is(err, post.ErrRefused) {
			t.Fatalf("%s: got %v, want an error wrapping post.ErrRefused", name, err)
		}
		var oe *post.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" {
			t.Fatalf("%s: %v is not a dial OpError", name, err)
		}
		t.Logf("%s: refused after %v: %v", name, time.Since(start), err)
	}
}
