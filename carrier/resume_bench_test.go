package carrier_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// BenchmarkResumedFirstMessage measures the time from Initiate to the
// peer receiving the first message: with a full handshake (a fresh
// Association), with resumption (a Carrier on an Association that holds
// a ticket; the message is not idempotent), and with resumption and
// 0-RTT (an idempotent message), on loopback and over a 20 ms round trip
// (internal/netem relay; UDP stacks only):
//
//	go test -run XXX -bench ResumedFirstMessage -benchtime 50x ./carrier
func BenchmarkResumedFirstMessage(b *testing.B) {
	for _, rtt := range []time.Duration{0, 20 * time.Millisecond} {
		for _, st := range benchStacks {
			if rtt > 0 && st == "tcp" {
				continue // the TCP relay adds no delay
			}
			for _, mode := range []string{"full", "resumed", "0rtt"} {
				if st == "tcp" && mode == "0rtt" {
					continue // psi/tcp sends no early data
				}
				name := fmt.Sprintf("rtt=%v/%s/%s", rtt, st, mode)
				b.Run(name, func(b *testing.B) { benchResumed(b, st, mode, rtt) })
			}
		}
	}
}

func benchResumed(b *testing.B, stack, mode string, rtt time.Duration) {
	l, err := carrier.Listen(context.Background(), localAny, serverConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	remote := l.Remote("127.0.0.1")
	if rtt > 0 {
		d := netem.Config{Delay: rtt / 2}
		r, err := netem.NewRelay(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.Addrs()[stack].Port()), d, d)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		remote = post.Remote{Name: r.Addr().String()}
	}
	benchFirstMessage(b, l, remote, clientConfig(), stack, mode)
}

// benchFirstMessage times Initiate to l's Carrier receiving the first
// message, in the given mode (full, resumed, 0rtt), over stack.
func benchFirstMessage(b *testing.B, l *carrier.Listener, remote post.Remote, cfg *carrier.Config, stack, mode string) {
	ctx := context.Background()
	var err error
	got := make(chan error, 1)
	go func() {
		for {
			s, err := l.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				_, err := s.Receive(ctx)
				got <- err
				if err == nil {
					s.Send(ctx, []byte("ack")) // lets the client's ticket arrive
				}
			}()
		}
	}()
	cfg.Policy.Stack(stack, policy.Require)
	var assoc *carrier.Config
	if mode != "full" {
		// One full handshake leaves the Association a ticket.
		c, err := carrier.Initiate(ctx, remote, cfg)
		if err != nil {
			b.Fatal(err)
		}
		roundTrip(b, c, got)
		lazy := *cfg
		lazy.Association, lazy.Lazy = c.Association(), true
		assoc = &lazy
		c.Close()
	}
	msg := &post.Message{Content: []byte("first"), Properties: post.Properties{Idempotent: mode == "0rtt"}}
	b.ResetTimer()
	for i := range b.N {
		var c *carrier.Carrier
		if assoc == nil {
			c, err = carrier.Initiate(ctx, remote, cfg)
		} else {
			c, err = carrier.Initiate(ctx, post.Remote{}, assoc)
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := c.SendMsg(ctx, msg); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := c.Receive(ctx); err != nil { // the next ticket is in
			b.Fatal(err)
		}
		if assoc != nil && mode == "0rtt" && !used0RTT(c) {
			r, _ := c.Transient().(interface{ Resumed() bool })
			b.Fatalf("the first message did not go as 0-RTT (iteration %d, %T, resumed %v)", i, c.Transient(), r != nil && r.Resumed())
		}
		c.Close()
		b.StartTimer()
	}
}

func roundTrip(b *testing.B, c *carrier.Carrier, got chan error) {
	ctx := context.Background()
	if err := c.Send(ctx, []byte("warm")); err != nil {
		b.Fatal(err)
	}
	if err := <-got; err != nil {
		b.Fatal(err)
	}
	if _, err := c.Receive(ctx); err != nil {
		b.Fatal(err)
	}
}

func used0RTT(c *carrier.Carrier) bool {
	z, ok := c.Transient().(interface {
		Used0RTT() bool
		HandshakeComplete() <-chan struct{}
	})
	if !ok {
		return false
	}
	<-z.HandshakeComplete()
	return z.Used0RTT()
}
