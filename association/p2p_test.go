package association_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// TestP2PLoopback: two peers name each other and a rendezvous server, and
// each gets an FSP transient over the ICE-selected path.
func TestP2PLoopback(t *testing.T) {
	srv := &rendezvous.Server{MaxWait: time.Second}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sec := psi.Security{PSK: []byte("peer-to-peer test key")}
	peer := func(self, other string) *association.Association {
		a, err := association.New(association.Config{
			Local:      post.Local{Peer: self},
			Remote:     post.Remote{Peer: other, Rendezvous: hs.URL},
			Security:   sec,
			Stacks:     []psi.Stack{&fsp.Stack{}},
			Rendezvous: association.RendezvousConfig{IncludeLoopback: true, IPv4Only: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	alice, bob := peer("alice", "bob"), peer("bob", "alice")
	type res struct {
		t   psi.Transient
		err error
	}
	bc := make(chan res, 1)
	go func() {
		tr, err := bob.Establish(ctx)
		bc <- res{tr, err}
	}()
	ta, err := alice.Establish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	rb := <-bc
	if rb.err != nil {
		t.Fatal(rb.err)
	}
	tb := rb.t
	defer tb.Close()
	if alice.ID() != bob.ID() {
		t.Fatal("peers ended on different Association IDs")
	}
	if ta.Stack() != "fsp" {
		t.Fatalf("stack %s", ta.Stack())
	}
	t.Logf("path %s via %s", ta.Path(), ta.Path().Interface)
	for _, pair := range [][2]psi.Transient{{ta, tb}, {tb, ta}} {
		if err := pair[0].WriteMessage(ctx, []byte("hi peer"), true, nil); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, end, err := pair[1].ReadMessage(ctx, buf)
		if err != nil || !end || string(buf[:n]) != "hi peer" {
			t.Fatalf("%q %v %v", buf[:n], end, err)
		}
	}
}
