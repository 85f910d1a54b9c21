package cases

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// sinkPeers is how many anonymous clients send large messages to the
// Sink (an eighth under the race detector, attack.Paced).
var sinkPeers = attack.Paced(20)

// TCPSinkMessages: anonymous clients (the Sink has a certificate and no
// ClientAuth) at four addresses, 127.0.0.2 to .5, send 15 MiB messages
// over TCP to a carrier.Sink, one after another, as fast as the Sink
// takes them. The Sink's application is slow: it takes a message every
// 200 ms. The Sink's default ReceiveBudget (64 MiB) must bound what it
// holds; the client dials and sends a small message.
func TCPSinkMessages(o attack.Options) (*attack.Result, error) {
	ctx := context.Background()
	p := testcert.Must()
	scfg := &carrier.Config{Security: psi.Security{Certificates: []tls.Certificate{p.Leaf}}}
	scfg.Policy.Stack("tcp", policy.Require)
	sink, err := carrier.NewSink(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, scfg)
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // the slow application
		for {
			if _, err := sink.Receive(sctx); err != nil {
				return
			}
			select {
			case <-time.After(200 * time.Millisecond):
			case <-sctx.Done():
				return
			}
		}
	}()
	remote := sink.Listener().Remote("127.0.0.1")
	cfg := func(from netip.Addr) *carrier.Config {
		c := &carrier.Config{Security: psi.Security{RootCAs: p.Pool, ServerName: "localhost"}}
		c.Local = post.Local{Addr: netip.AddrPortFrom(from, 0)}
		c.Policy.Stack("tcp", policy.Require)
		return c
	}
	msg := make([]byte, 15<<20) // one buffer for every attacker
	var sent, failed int
	c := attack.Case{
		Name:   fmt.Sprintf("TCP: %d clients send 15 MiB messages to a slow Sink", sinkPeers),
		Budget: 128 << 20,
		Dial: func(ctx context.Context) error {
			src, err := carrier.NewSource(ctx, remote, cfg(netip.MustParseAddr("127.0.0.1")))
			if err != nil {
				return err
			}
			defer src.Abort()
			if err := src.Send(ctx, []byte("hello")); err != nil {
				return err
			}
			return src.Flush(ctx)
		},
		Attack: func(ctx context.Context, _ *attack.Bytes) {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := range sinkPeers {
				wg.Go(func() {
					src, err := carrier.NewSource(ctx, remote, cfg(netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i%4)})))
					if err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
						return
					}
					defer src.Abort()
					for ctx.Err() == nil {
						if src.Send(ctx, msg) != nil || src.Flush(ctx) != nil {
							return
						}
						mu.Lock()
						sent++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
		},
		Check: func() (string, error) {
			st := sink.Listener().Stats()
			note := fmt.Sprintf("%d messages sent whole, %d clients failed to connect; the Sink held at most %s of whole messages, %d Carriers evicted",
				sent, failed, attack.MiB(uint64(st.ReceivePeak)), st.ReceiveEvicted)
			if st.ReceivePeak > 64<<20 {
				return note, fmt.Errorf("the Sink held %s, over its 64 MiB ReceiveBudget", attack.MiB(uint64(st.ReceivePeak)))
			}
			return note, nil
		},
	}
	return attack.Run(c, o), nil
}
