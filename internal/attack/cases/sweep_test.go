package cases

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/quic"
)

// sweepSizes are the datagram sizes the sweep sends: every header
// boundary of FSP and QUIC nearby, the QUIC 1,200-byte floor, path MTUs
// and jumbo sizes.
var sweepSizes = []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 20, 21, 27, 28, 29, 40, 44, 45, 64, 68, 76, 77, 100, 128, 164, 200, 256,
	512, 1000, 1199, 1200, 1201, 1232, 1252, 1280, 1350, 1400, 1452, 1472, 1500, 2000, 4000, 9000}

// TestAmplificationSweep sends datagrams of every first byte, each of
// sweepSizes bytes with the rest random, from a socket of their own per
// size, to each UDP listener: FSP's, QUIC's, and a Carrier listener's
// port that FSP and QUIC share; no reply may be larger than the
// datagram it answers (a socket's replies are set against its size).
func TestAmplificationSweep(t *testing.T) {
	scfg := func() *psi.Config {
		return &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	}
	ctx := context.Background()
	targets := map[string]func(t *testing.T) netip.AddrPort{
		"fsp": func(t *testing.T) netip.AddrPort {
			ln, err := (&fsp.Stack{}).Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			serve(ctx, ln, closeTransient)
			return ln.Addr()
		},
		"quic": func(t *testing.T) netip.AddrPort {
			ln, err := (&quic.Stack{}).Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			serve(ctx, ln, closeTransient)
			return ln.Addr()
		},
		"carrier": func(t *testing.T) netip.AddrPort {
			l, err := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")},
				&carrier.Config{Security: scfg().Security})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			for name, a := range l.Addrs() {
				if name == "fsp" {
					return a
				}
			}
			t.Fatalf("no FSP port among %v", l.Addrs())
			return netip.AddrPort{}
		},
	}
	for name, listen := range targets {
		t.Run(name, func(t *testing.T) {
			to := net.UDPAddrFromAddrPort(listen(t))
			var wg sync.WaitGroup
			for i, size := range sweepSizes {
				wg.Go(func() {
					pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 9, byte(1+i))})
					if err != nil {
						t.Error(err)
						return
					}
					defer pc.Close()
					r := rand.New(rand.NewPCG(uint64(size), 1))
					p := make([]byte, size)
					for b := range 256 {
						for j := range p {
							p[j] = byte(r.Uint32())
						}
						p[0] = byte(b)
						if _, err := pc.WriteTo(p, to); err != nil {
							t.Error(err)
							return
						}
					}
					buf := make([]byte, 65536)
					var got, largest int
					for {
						pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
						n, _, err := pc.ReadFrom(buf)
						if err != nil {
							break
						}
						got++
						largest = max(largest, n)
						if n > size {
							t.Errorf("a %d-byte reply to %d-byte datagrams (first byte %#x)", n, size, buf[0])
						}
					}
					if got > 0 {
						t.Logf("%d-byte datagrams: %d replies, largest %d bytes", size, got, largest)
					}
				})
			}
			wg.Wait()
		})
	}
}
