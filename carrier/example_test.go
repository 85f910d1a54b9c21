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
