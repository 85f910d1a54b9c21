package carrier_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Both ends share a pre-shared key; the listener accepts Carriers on every
// stack and the initiator races them.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &carrier.Config{Security: psi.Security{PSK: []byte("example pre-shared key")}}

	l, err := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			return
		}
		defer c.Close()
		m, err := c.Receive(ctx)
		if err != nil {
			return
		}
		c.Send(ctx, append([]byte("echo: "), m.Content...))
		c.Flush(ctx)
	}()

	c, err := carrier.Initiate(ctx, l.Remote("127.0.0.1"), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Send(ctx, []byte("hello"))
	reply, err := c.Receive(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply.Content))
	// Output: echo: hello
}

// Messages carry properties; events report what happened to them.
func ExampleCarrier_SendMsg() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &carrier.Config{Security: psi.Security{PSK: []byte("example pre-shared key")}}
	l, _ := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, cfg)
	defer l.Close()
	c, err := carrier.Initiate(ctx, l.Remote("127.0.0.1"), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	events := make(chan post.SendEvent, 1)
	err = c.SendMsg(ctx, &post.Message{
		Content: []byte("position update"),
		Properties: post.Properties{
			Niceness: 1,           // yields to niceness 0
			Lifetime: time.Second, // useless after a second
		},
		OnEvent: func(e post.SendEvent) {
			if e.Kind != post.EventAcked {
				events <- e
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println((<-events).Kind)
	// Output: sent
}

// A policy steers the race: here TCP is required.
func ExampleInitiate_policy() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &carrier.Config{Security: psi.Security{PSK: []byte("example pre-shared key")}}
	l, _ := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, cfg)
	defer l.Close()

	ccfg := *cfg
	ccfg.Policy.Stack("tcp", policy.Require)
	c, err := carrier.Initiate(ctx, l.Remote("127.0.0.1"), &ccfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println(c.Stack())
	// Output: tcp
}

// A sender that must know its data arrived closes with a bound; a large
// message streams in parts and a failed one is abandoned, never delivered
// as complete.
func ExampleCarrier_CloseContext() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &carrier.Config{Security: psi.Security{PSK: []byte("example pre-shared key")}}
	l, err := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	got := make(chan int)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			return
		}
		defer s.Close()
		n := 0
		for { // parts of at most 64 KiB, whatever the message's length
			m, err := s.Ready(ctx, carrier.ReadyOptions{Max: 64 << 10})
			if err != nil {
				break // io.EOF once the sender has closed
			}
			n += len(m.Content)
		}
		got <- n
	}()

	c, err := carrier.Initiate(ctx, l.Remote("127.0.0.1"), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	w, err := c.NewMessageWriter(ctx, post.Properties{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for range 4 {
		if _, err := w.Write(make([]byte, 1<<20)); err != nil {
			w.Abort() // the reader gets an error, never a truncated message
			break
		}
	}
	if err := w.Close(); err != nil {
		fmt.Println(err)
	}
	closeCtx, stop := context.WithTimeout(ctx, 2*time.Second)
	defer stop()
	if err := c.CloseContext(closeCtx); err != nil {
		fmt.Println("not everything arrived:", err)
		return
	}
	fmt.Println(<-got, "bytes arrived")
	// Output: 4194304 bytes arrived
}
