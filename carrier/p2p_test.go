package carrier_test

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// TestP2PInitiate: both peers Initiate toward each other through a
// rendezvous server and exchange messages over FSP on the ICE path, and
// over QUIC when the policy prohibits FSP.
func TestP2PInitiate(t *testing.T) {
	for _, stack := range []string{"fsp", "quic"} {
		t.Run(stack, func(t *testing.T) { testP2PInitiate(t, stack) })
	}
}

func testP2PInitiate(t *testing.T, stack string) {
	srv := rendezvous.NewServer(rendezvous.Config{MaxWait: time.Second})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	ctx := ctxT(t)
	keys := map[string]*rendezvous.Key{}
	ids := map[string]rendezvous.PeerID{}
	for _, name := range []string{"alice", "bob"} {
		k, err := rendezvous.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[name], ids[name] = k, k.ID
	}
	cfg := func(self string) *carrier.Config {
		c := &carrier.Config{
			Security:   psi.Security{Certificates: []tls.Certificate{keys[self].Certificate}},
			Rendezvous: association.RendezvousConfig{IncludeLoopback: true, IPv4Only: true, Peers: ids},
		}
		if stack != "fsp" {
			c.Policy.Stack("fsp", policy.Prohibit)
		}
		return c
	}
	type res struct {
		c   *carrier.Carrier
		err error
	}
	bc := make(chan res, 1)
	go func() {
		c, err := carrier.Initiate(ctx, post.Remote{Peer: "alice", Rendezvous: hs.URL}, cfg("bob"))
		bc <- res{c, err}
	}()
	alice, err := carrier.Initiate(ctx, post.Remote{Peer: "bob", Rendezvous: hs.URL}, cfg("alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	rb := <-bc
	if rb.err != nil {
		t.Fatal(rb.err)
	}
	bob := rb.c
	defer bob.Close()
	if alice.Association().ID() != bob.Association().ID() {
		t.Fatal("different Associations")
	}
	if p := alice.Peer(); !p.Verified || rendezvous.IDFromPin(p.Pin) != ids["bob"] {
		t.Fatalf("alice sees %s (verified %v), want bob", rendezvous.IDFromPin(p.Pin), p.Verified)
	}
	if p := bob.Peer(); !p.Verified || rendezvous.IDFromPin(p.Pin) != ids["alice"] {
		t.Fatalf("bob sees %s (verified %v), want alice", rendezvous.IDFromPin(p.Pin), p.Verified)
	}
	big := random(1 << 20)
	alice.Send(ctx, []byte("hello bob"))
	bob.Send(ctx, []byte("hello alice"))
	alice.Send(ctx, big)
	if m, err := bob.Receive(ctx); err != nil || string(m.Content) != "hello bob" {
		t.Fatalf("%v %v", err, m)
	}
	if m, err := alice.Receive(ctx); err != nil || string(m.Content) != "hello alice" {
		t.Fatalf("%v %v", err, m)
	}
	if m, err := bob.Receive(ctx); err != nil || len(m.Content) != len(big) {
		t.Fatalf("%v", err)
	}
	if alice.Stack() != stack || bob.Stack() != stack {
		t.Fatalf("stacks %s and %s, want %s", alice.Stack(), bob.Stack(), stack)
	}
	t.Logf("%s over %s", alice.Stack(), alice.Path().Interface)
}
