package carrier_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// TestNetConn runs x/net's net.Conn conformance tests over Conn on each
// stack.
func TestNetConn(t *testing.T) {
	for _, st := range benchStacks {
		t.Run(st, func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				return connPipe(st)
			})
		})
	}
}

// connPipe connects two Conns over one required stack.
func connPipe(stack string) (c1, c2 net.Conn, stop func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Policy.Stack(stack, policy.Require)
	// BasicIO's Close must deliver 1 MiB: the linger is a hang limit, not
	// a speed limit (500 ms failed on every stack in 1 of 6 runs under
	// -race and load). stop aborts what the cases leave open.
	scfg.Linger, ccfg.Linger = 10*time.Second, 10*time.Second
	ccfg.Policy.Stack(stack, policy.Require)
	l, err := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, scfg)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := carrier.Initiate(ctx, l.Remote("127.0.0.1"), ccfg)
	if err != nil {
		l.Close()
		return nil, nil, nil, err
	}
	// The server learns of a Carrier with its first message on some
	// stacks.
	var s *carrier.Carrier
	if err = c.Send(ctx, []byte("hello")); err == nil {
		if s, err = l.Accept(ctx); err == nil {
			_, err = s.Receive(ctx)
		}
	}
	if err != nil {
		c.Abort()
		l.Close()
		return nil, nil, nil, err
	}
	c1, c2 = carrier.NewConn(c), carrier.NewConn(s)
	stop = func() {
		// A Close the case began (BasicIO, PingPong, CloseTimeout) is
		// waited for; a Conn the case left open may hold data its peer
		// does not read, so it is aborted, not left to linger.
		for _, p := range []struct {
			n *carrier.Conn
			c *carrier.Carrier
		}{{c1.(*carrier.Conn), c}, {c2.(*carrier.Conn), s}} {
			if !carrier.ConnClosed(p.n) {
				p.c.Abort()
			}
			p.n.Close()
		}
		l.Close()
	}
	return c1, c2, stop, nil
}

// TestConnReadSkipsEmpty: a Conn reads a byte stream, where an empty
// message (a peer's Send of nothing, or the end of a MessageWriter sent
// alone) carries no bytes; Read returned (0, nil) for it, which io.Reader
// discourages and bufio.Reader turns into io.ErrNoProgress after 100 in
// a row. Read now waits for the next bytes.
func TestConnReadSkipsEmpty(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		c, s := pairOn(t, stack, nil, nil)
		ctx := ctxT(t)
		for range 3 {
			if err := c.Send(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		w, err := c.NewMessageWriter(ctx, post.Properties{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("ab")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Send(ctx, []byte("cd")); err != nil {
			t.Fatal(err)
		}
		r := carrier.NewConn(s)
		r.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got []byte
		buf := make([]byte, 16)
		for len(got) < 4 {
			n, err := r.Read(buf)
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			if n == 0 {
				t.Fatalf("Read returned 0 bytes and no error after %q", got)
			}
			got = append(got, buf[:n]...)
		}
		if string(got) != "abcd" {
			t.Fatalf("read %q, want abcd", got)
		}
	})
}
