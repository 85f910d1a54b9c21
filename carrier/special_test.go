package carrier_test

import (
	"context"
	"errors"
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

// TestSpecialReceiveAfterClose: once a Sink or Responder is closed,
// Receive fails with post.ErrClosed every time, though messages were
// queued unread (they are discarded, not returned at random).
func TestSpecialReceiveAfterClose(t *testing.T) {
	const n = 8
	ctx := ctxT(t)
	local := post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}
	fill := func(t *testing.T, l *carrier.Listener, queued func() int) {
		src, err := carrier.NewSource(ctx, l.Remote("localhost"), clientConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		for i := range n {
			if err := src.Send(ctx, []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		for queued() < n-1 { // the Carrier may hold the last one
			select {
			case <-ctx.Done():
				t.Fatalf("%d queued", queued())
			case <-time.After(time.Millisecond):
			}
		}
	}
	t.Run("sink", func(t *testing.T) {
		s, err := carrier.NewSink(ctx, local, serverConfig())
		if err != nil {
			t.Fatal(err)
		}
		fill(t, s.Listener(), func() int { return carrier.SinkQueued(s) })
		s.Close()
		for range 2 * n {
			if m, err := s.Receive(ctx); !errors.Is(err, post.ErrClosed) {
				t.Fatalf("Receive after Close: %v %v", m, err)
			}
		}
	})
	t.Run("responder", func(t *testing.T) {
		r, err := carrier.NewResponder(ctx, local, serverConfig())
		if err != nil {
			t.Fatal(err)
		}
		fill(t, r.Listener(), func() int { return carrier.ResponderQueued(r) })
		r.Close()
		for range 2 * n {
			if q, err := r.Receive(ctx); !errors.Is(err, post.ErrClosed) {
				t.Fatalf("Receive after Close: %v %v", q.Message, err)
			}
		}
	})
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
					refused(t, err)
					return
				}
				defer f.Close()
				if err := f.Send(ctx, []byte("on a fork")); err != nil {
					refused(t, err)
					return
				}
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_, err = f.Receive(rctx)
				if err == nil || rctx.Err() != nil {
					t.Fatalf("the fork was not refused: %v", err)
				}
				refused(t, err)
			})
		}
	})
}

// TestResponderReplyAfterPeerClosed: a reply to a requester that has
// closed its Carrier fails with post.ErrPeerClosed, as a send on any
// Carrier whose peer closed does; it failed with a bare post.ErrClosed,
// since the Responder closes a Carrier whose peer's messages ended.
func TestResponderReplyAfterPeerClosed(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		ctx := ctxT(t)
		scfg, ccfg := serverConfig(), clientConfig()
		scfg.Policy.Stack(stack, policy.Require)
		ccfg.Policy.Stack(stack, policy.Require)
		r, err := carrier.NewResponder(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, scfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		c, err := carrier.Initiate(ctx, r.Listener().Remote("localhost"), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Send(ctx, []byte("request")); err != nil {
			t.Fatal(err)
		}
		q, err := r.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		// The requester's close reaches the Responder, which then closes
		// the reply Source's Carrier.
		for {
			err = q.Reply.Send(ctx, []byte("late reply"))
			if err != nil {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("every reply to a closed requester was queued")
			case <-time.After(10 * time.Millisecond):
			}
		}
		if !errors.Is(err, post.ErrPeerClosed) {
			t.Errorf("reply after the requester closed: %v; want an error wrapping post.ErrPeerClosed", err)
		}
	})
}

// TestSpecialTooLargeResets: a message over a Sink's or Responder's
// MaxMessageSize ends that peer's Carrier with a reset, so the sender
// learns that it and the messages after it were not taken. The Sink
// closed the Carrier in order and dropped them unread: the sender's Close
// returned nil on TCP (and at random on FSP), and neither side learned of
// the loss.
func TestSpecialTooLargeResets(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		for _, kind := range []string{"sink", "responder"} {
			t.Run(kind, func(t *testing.T) {
				ctx := ctxT(t)
				scfg, ccfg := serverConfig(), clientConfig()
				scfg.Policy.Stack(stack, policy.Require)
				ccfg.Policy.Stack(stack, policy.Require)
				scfg.MaxMessageSize = 64 << 10
				local := post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}
				var l *carrier.Listener
				var receive func(context.Context) (*post.Message, error)
				if kind == "sink" {
					s, err := carrier.NewSink(ctx, local, scfg)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Close()
					l, receive = s.Listener(), s.Receive
				} else {
					r, err := carrier.NewResponder(ctx, local, scfg)
					if err != nil {
						t.Fatal(err)
					}
					defer r.Close()
					l = r.Listener()
					receive = func(ctx context.Context) (*post.Message, error) {
						q, err := r.Receive(ctx)
						return q.Message, err
					}
				}
				src, err := carrier.NewSource(ctx, l.Remote("localhost"), ccfg)
				if err != nil {
					t.Fatal(err)
				}
				// Larger than the stacks and kernels buffer, so the
				// sender cannot have it all acknowledged before the reset.
				big := make([]byte, 16<<20)
				for _, m := range [][]byte{[]byte("before"), big, []byte("after")} {
					if err := src.Send(ctx, m); err != nil {
						t.Fatal(err)
					}
				}
				m, err := receive(ctx)
				if err != nil || string(m.Content) != "before" {
					t.Fatalf("first message: %v", err)
				}
				if err := src.Close(); !errors.Is(err, post.ErrReset) {
					t.Errorf("sender's Close after a message over the receiver's limit: %v; want an error wrapping post.ErrReset", err)
				}
			})
		}
	})
}

// TestResponderReplyClose: a handler that sends its reply and closes the
// reply Source has the reply delivered and Close return nil on every
// stack. The Responder's reader of that Carrier sees the close as an
// error of its own and must leave the close to finish.
func TestResponderReplyClose(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		ctx := ctxT(t)
		scfg, ccfg := serverConfig(), clientConfig()
		scfg.Policy.Stack(stack, policy.Require)
		ccfg.Policy.Stack(stack, policy.Require)
		r, err := carrier.NewResponder(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, scfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		closed := make(chan error, 1)
		go r.Serve(ctx, func(q carrier.Request) {
			q.Reply.Send(ctx, make([]byte, 1<<20))
			closed <- q.Reply.Close()
		})
		c, err := carrier.Initiate(ctx, r.Listener().Remote("localhost"), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Send(ctx, []byte("request")); err != nil {
			t.Fatal(err)
		}
		m, err := c.Receive(ctx)
		if err != nil || len(m.Content) != 1<<20 {
			t.Fatalf("reply: %v", err)
		}
		if err := <-closed; err != nil {
			t.Errorf("Reply.Close: %v", err)
		}
	})
}
