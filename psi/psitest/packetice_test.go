package psitest_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/psitest"
	"github.com/postsockets/postsockets/psi/quic"
)

// packetStack dials and listens over a net.PacketConn it is given, as a
// peer-to-peer Association runs a stack over the ICE-selected pair.
type packetStack interface {
	psi.PacketDialer
	psi.PacketListener
}

// TestPacketStacksOverICE runs the contract's suite over each datagram
// stack on an ICE path between two loopback agents, through
// psi.PacketDialer and psi.PacketListener.
func TestPacketStacksOverICE(t *testing.T) {
	certs := testcert.Must()
	for _, st := range []packetStack{&fsp.Stack{}, &quic.Stack{}} {
		t.Run(st.(psi.Stack).Name(), func(t *testing.T) {
			if _, ok := st.(*fsp.Stack); ok && testing.Short() {
				t.Skip("short: TestFSPOverICE covers FSP on an ICE path")
			}
			psitest.TestTransient(t, func(t *testing.T, tune func(*psi.Config)) psitest.Pair {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t.Cleanup(cancel)
				ca, cb := icePair(t, ctx)
				va, vb := psitest.NewVanishingConn(ca), psitest.NewVanishingConn(cb)
				scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
				ccfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool, ServerName: "localhost"}}
				tune(scfg)
				tune(ccfg)
				l, err := st.ListenPacket(ctx, vb, scfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				a, err := st.DialPacket(ctx, va, ca.RemoteAddr(), ccfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { a.Close() })
				b, err := l.Accept(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { b.Close() })
				return psitest.Pair{
					A: a, B: b,
					ExitA:   func() { va.Vanish(); ca.Close() },
					VanishB: vb.Vanish,
				}
			})
		})
	}
}

// queuedConn is a PacketConn whose first read returns a datagram taken
// off the socket before the stack was given it.
type queuedConn struct {
	net.PacketConn
	mu   sync.Mutex
	head []byte
	from net.Addr
}

func (c *queuedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	head, from := c.head, c.from
	c.head = nil
	c.mu.Unlock()
	if head != nil {
		return copy(b, head), from, nil
	}
	return c.PacketConn.ReadFrom(b)
}

// TestPacketListenQueuedHandshake: a handshake that reached the path
// before ListenPacket was called is answered, not refused. On an ICE
// path the controlling side dials as soon as its own checks pass, which
// may be before the other side listens.
func TestPacketListenQueuedHandshake(t *testing.T) {
	psk := []byte("queued handshake test key 32 by.")
	for _, st := range []packetStack{&fsp.Stack{}, &quic.Stack{}} {
		t.Run(st.(psi.Stack).Name(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			cl, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			type dialed struct {
				t   psi.Transient
				err error
			}
			ch := make(chan dialed, 1)
			go func() {
				tr, err := st.DialPacket(ctx, cl, ln.LocalAddr(), &psi.Config{Security: psi.Security{PSK: psk}})
				ch <- dialed{tr, err}
			}()
			buf := make([]byte, 2048)
			ln.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := ln.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			ln.SetReadDeadline(time.Time{})
			qc := &queuedConn{PacketConn: ln, head: buf[:n], from: from}
			// A PSK listener has the most to set up before it listens.
			l, err := st.ListenPacket(ctx, qc, &psi.Config{Security: psi.Security{PSK: psk}})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			d := <-ch
			if d.err != nil {
				t.Fatalf("dial with its first packet queued before ListenPacket: %v", d.err)
			}
			defer d.t.Close()
			b, err := l.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
		})
	}
}
