package cases

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/quic"
)

// deafConn is a client socket that counts what arrives and never passes
// it on, so the client's handshake never completes.
type deafConn struct {
	net.PacketConn // an interface: quic-go must not see the *net.UDPConn
	b              *attack.Bytes
	done           chan struct{}
	once           sync.Once
}

func newDeafConn(pc *net.UDPConn, b *attack.Bytes) *deafConn {
	d := &deafConn{PacketConn: pc, b: b, done: make(chan struct{})}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			b.Recv(n)
		}
	}()
	return d
}

func (d *deafConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-d.done
	return 0, nil, net.ErrClosed
}

func (d *deafConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	n, err := d.PacketConn.WriteTo(p, addr)
	if err == nil {
		d.b.Sent(n)
	}
	return n, err
}

func (d *deafConn) Close() error {
	d.once.Do(func() { close(d.done) })
	return d.PacketConn.Close()
}

// QUICHandshakeFlood starts 100 QUIC handshakes from one address that
// never get past the client's first flight, restarting each one every
// 500 ms, while a client dials from a new address of 127.0.0.0/24 each
// time (legitLocal).
func QUICHandshakeFlood(o attack.Options) (*attack.Result, error) {
	ctx := context.Background()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	st := &quic.Stack{}
	ln, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	serve(ctx, ln, closeTransient)
	ccfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}}
	var started atomic.Int64
	c := attack.Case{
		Name:   "QUIC handshakes never completed, one address",
		Budget: 32 << 20,
		Dial: func(ctx context.Context) error {
			cfg := *ccfg
			cfg.Local = legitLocal()
			t, err := st.Dial(ctx, ln.Addr(), &cfg)
			if err != nil {
				return err
			}
			go t.Close()
			return nil
		},
		Attack: func(ctx context.Context, b *attack.Bytes) {
			tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{quic.DefaultALPN}}
			var wg sync.WaitGroup
			// 100, or fewer in a slower build (attack.Paced): still more
			// than a source may have in progress.
			for range attack.Paced(100) {
				wg.Go(func() {
					for ctx.Err() == nil {
						pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: attackerAddr.AsSlice()})
						if err != nil {
							return
						}
						d := newDeafConn(pc, b)
						dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
						// quic-go waits for its reader when the dial ends.
						context.AfterFunc(dctx, func() { d.Close() })
						started.Add(1)
						quicgo.Dial(dctx, d, net.UDPAddrFromAddrPort(ln.Addr()), tc, &quicgo.Config{})
						cancel()
						d.Close()
					}
				})
			}
			wg.Wait()
		},
		Check: func() (string, error) {
			return fmt.Sprintf("%d handshakes started", started.Load()), nil
		},
	}
	return attack.Run(c, o), nil
}
