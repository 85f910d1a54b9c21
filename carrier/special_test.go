package carrier_test

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"

	"github.com/postsockets/postsockets/carrier"
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
