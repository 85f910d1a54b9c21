package carrier_test

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

func TestSourceSink(t *testing.T) {
	ctx := ctxT(t)
	sink, err := carrier.NewSink(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var srcs []*carrier.Source
	for i := range 3 {
		src, err := carrier.NewSource(ctx, sink.Listener().Remote("localhost"), clientConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		srcs = append(srcs, src)
		if err := src.Send(ctx, []byte(fmt.Sprintf("from %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for range 3 {
		m, err := sink.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.Content))
	}
	sort.Strings(got)
	if fmt.Sprint(got) != "[from 0 from 1 from 2]" {
		t.Fatalf("got %q", got)
	}
}

func TestResponder(t *testing.T) {
	ctx := ctxT(t)
	r, err := carrier.NewResponder(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go r.Serve(ctx, func(q carrier.Request) {
		q.Reply.Send(ctx, append([]byte("re: "), q.Content...))
	})
	for i := range 2 {
		c, err := carrier.Initiate(ctx, r.Listener().Remote("localhost"), clientConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Send(ctx, []byte(fmt.Sprint(i)))
		m, err := c.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("re: %d", i); string(m.Content) != want {
			t.Fatalf("got %q, want %q", m.Content, want)
		}
	}
}

// TestSpecialRefusesForks: a Sink and a Responder never accept forks, so
// a peer's fork fails loudly on every stack (Fork or its Send returns an
// error, or the refusal ends its Receive at once) rather than leaving its
// messages unread while Fork and Send return nil.
func TestSpecialRefusesForks(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		for _, kind := range []string{"sink", "responder"} {
			t.Run(kind, func(t *testing.T) {
				ctx := ctxT(t)
				scfg, ccfg := serverConfig(), clientConfig()
				scfg.Policy.Stack(stack, policy.Require)
				ccfg.Policy.Stack(stack, policy.Require)
				local := post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}
				var l *carrier.Listener
				if kind == "sink" {
					s, err := carrier.NewSink(ctx, local, scfg)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Close()
					l = s.Listener()
				} else {
					r, err := carrier.NewResponder(ctx, local, scfg)
					if err != nil {
						t.Fatal(err)
					}
					defer r.Close()
					l = r.Listener()
				}
				c, err := carrier.Initiate(ctx, l.Remote("localhost"), ccfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := c.Send(ctx, []byte("root")); err != nil {
					t.Fatal(err)
				}
				f, err := c.Fork(ctx)
				if err != nil {
					return
				}
				defer f.Close()
				if err := f.Send(ctx, []byte("on a fork")); err != nil {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_, err = f.Receive(rctx)
				if err == nil || rctx.Err() != nil {
					t.Fatalf("the fork was not refused: %v", err)
				}
			})
		}
	})
}
