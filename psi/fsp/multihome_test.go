package fsp

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/postsockets/postsockets/psi"
)

// twoAddrConn is a client with two local addresses: it reads from both
// sockets and sends each run of 16 datagrams from the next one.
type twoAddrConn struct {
	net.PacketConn // the first socket: LocalAddr, deadlines
	socks          [2]*net.UDPConn
	n              atomic.Uint64
	in             chan rx
	done           chan struct{}
	once           sync.Once
}

func newTwoAddrConn(t *testing.T) *twoAddrConn {
	m := &twoAddrConn{in: make(chan rx, 256), done: make(chan struct{})}
	for i, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ip+":0")))
		if err != nil {
			t.Skip("no second loopback address:", err)
		}
		m.socks[i] = pc
		go func() {
			for {
				buf := make([]byte, 4096)
				n, addr, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				select {
				case m.in <- rx{buf[:n], addr}:
				case <-m.done:
					return
				}
			}
		}()
	}
	m.PacketConn = m.socks[0]
	t.Cleanup(func() { m.Close() })
	return m
}

func (m *twoAddrConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-m.in:
		return copy(b, p.b), p.addr, nil
	case <-m.done:
		return 0, nil, net.ErrClosed
	}
}

func (m *twoAddrConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	return m.socks[m.n.Add(1)/16%2].WriteTo(b, addr)
}

func (m *twoAddrConn) Close() error {
	m.once.Do(func() {
		close(m.done)
		m.socks[0].Close()
		m.socks[1].Close()
	})
	return nil
}

// TestMultihoming has a client send from two local addresses (127.0.0.1
// and 127.0.0.2): the server validates both, keeps an RTT estimate for
// each, sends on the one the newest packet came from, and a transfer each
// way arrives intact.
func TestMultihoming(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	mc := newTwoAddrConn(t)
	tr := &Transport{Conn: mc}
	t.Cleanup(func() { mc.Close(); tr.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, tr, l, ccfg)
	t.Cleanup(func() { c.Close(); s.Close() })
	transferMid(t, c, s, 4<<20, func() {})
	transferMid(t, s, c, 4<<20, func() {})

	paths := s.Paths()
	seen := map[netip.Addr]bool{}
	active := 0
	for _, p := range paths {
		ap := addrPort(p.Remote)
		seen[ap.Addr()] = true
		if !p.Validated || p.RTT <= 0 {
			t.Errorf("path %+v: not validated or no RTT", p)
		}
		if p.Active {
			active++
		}
	}
	if len(paths) != 2 || !seen[netip.MustParseAddr("127.0.0.1")] || !seen[netip.MustParseAddr("127.0.0.2")] || active != 1 {
		t.Fatalf("paths %+v", paths)
	}
	for _, p := range paths {
		t.Logf("path %v -> %v: validated %v active %v rtt %v (var %v) sent %d lost %d",
			p.Local, p.Remote, p.Validated, p.Active, p.RTT, p.RTTVar, p.Sent, p.Lost)
	}
	// The psi view reports the same paths.
	var tp psi.Transient = &transient{c: s}
	pp := tp.Paths()
	if len(pp) != 2 || !pp[0].Active || pp[1].Active || pp[0].RTT <= 0 || pp[1].RTT <= 0 {
		t.Fatalf("psi paths %+v", pp)
	}
	if tp.Path().Remote != pp[0].Remote && addrPort(s.RemoteAddr()) != pp[0].Remote {
		t.Fatalf("psi Path %v is not the active one %v", tp.Path(), pp[0])
	}
}
