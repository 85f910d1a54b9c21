package fsp_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// FSP used on its own: both ends share a pre-shared key; one message sent
// is one message received.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &fsp.Config{Security: psi.Security{PSK: []byte("example pre-shared key")}}
	l, err := fsp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), cfg)
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
		msg, err := c.ReceiveMessage(ctx)
		if err == nil {
			c.SendMessage(ctx, append([]byte("echo: "), msg...))
		}
	}()

	c, err := fsp.Dial(ctx, netip.MustParseAddrPort(l.Addr().String()), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.SendMessage(ctx, []byte("hello"))
	reply, err := c.ReceiveMessage(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply))
	// Output: echo: hello
}
