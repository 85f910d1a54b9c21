package association_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/quic"
)

// newRendezvous serves a rendezvous server on loopback and returns its URL.
func newRendezvous(t *testing.T, cfg rendezvous.Config) string {
	t.Helper()
	cfg.MaxWait = time.Second
	srv := rendezvous.NewServer(cfg)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { srv.Close(); hs.Close() })
	return hs.URL
}

func genKey(t *testing.T) *rendezvous.Key {
	t.Helper()
	k, err := rendezvous.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// p2pPeer is the Association of a peer holding key, registering as local
// (empty: its own ID) and asking for remote, with the names in peers
// pinned. It has FSP and QUIC, FSP first.
func p2pPeer(t *testing.T, url string, key *rendezvous.Key, local, remote string, peers map[string]rendezvous.PeerID, handshake ...time.Duration) *association.Association {
	t.Helper()
	var hs time.Duration
	if len(handshake) > 0 {
		hs = handshake[0]
	}
	return p2pPeerWith(t, url, key, local, remote, peers, hs, false)
}

// p2pPeerWith is p2pPeer with a handshake timeout (zero: the default)
// and, with noFSP, a policy that prohibits FSP.
func p2pPeerWith(t *testing.T, url string, key *rendezvous.Key, local, remote string, peers map[string]rendezvous.PeerID, handshake time.Duration, noFSP bool) *association.Association {
	t.Helper()
	var pol policy.Context
	if noFSP {
		pol.Stack("fsp", policy.Prohibit)
	}
	a, err := association.New(association.Config{
		Policy:    pol,
		Transient: psi.Config{HandshakeTimeout: handshake},
		Local:     post.Local{Peer: local},
		Remote:    post.Remote{Peer: remote, Rendezvous: url},
		Security:  psi.Security{Certificates: []tls.Certificate{key.Certificate}},
		Stacks:    []psi.Stack{&fsp.Stack{}, &quic.Stack{}},
		Rendezvous: association.RendezvousConfig{
			IncludeLoopback: true, IPv4Only: true, Peers: peers,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type result struct {
	t   psi.Transient
	err error
}

// establishBoth runs Establish on a and b at once.
func establishBoth(actx, bctx context.Context, a, b *association.Association) (ra, rb result) {
	bc := make(chan result, 1)
	go func() {
		tr, err := b.Establish(bctx)
		bc <- result{tr, err}
	}()
	tr, err := a.Establish(actx)
	return result{tr, err}, <-bc
}

// TestP2PLoopback: two peers name each other and a rendezvous server, and
// each gets a transient over the ICE-selected path: FSP by default, QUIC
// when either side's policy prohibits FSP.
func TestP2PLoopback(t *testing.T) {
	for _, c := range []struct {
		name                 string
		aliceNoFSP, bobNoFSP bool
		want                 string
	}{
		{"default", false, false, "fsp"},
		{"fsp prohibited", true, true, "quic"},
		{"fsp prohibited at alice", true, false, "quic"},
		{"fsp prohibited at bob", false, true, "quic"},
	} {
		t.Run(c.name, func(t *testing.T) { testP2PLoopback(t, c.aliceNoFSP, c.bobNoFSP, c.want) })
	}
}

func testP2PLoopback(t *testing.T, aliceNoFSP, bobNoFSP bool, want string) {
	url := newRendezvous(t, rendezvous.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ka, kb := genKey(t), genKey(t)
	alice := p2pPeerWith(t, url, ka, "", "bob", map[string]rendezvous.PeerID{"bob": kb.ID}, 0, aliceNoFSP)
	bob := p2pPeerWith(t, url, kb, "", "alice", map[string]rendezvous.PeerID{"alice": ka.ID}, 0, bobNoFSP)
	ra, rb := establishBoth(ctx, ctx, alice, bob)
	if ra.err != nil || rb.err != nil {
		t.Fatalf("alice %v, bob %v", ra.err, rb.err)
	}
	ta, tb := ra.t, rb.t
	defer ta.Close()
	defer tb.Close()
	if alice.ID() != bob.ID() {
		t.Fatal("peers ended on different Association IDs")
	}
	if ta.Stack() != want || tb.Stack() != want {
		t.Fatalf("stacks %s and %s, want %s", ta.Stack(), tb.Stack(), want)
	}
	if w, ok := alice.Winner(); !ok || w.Stack != want {
		t.Fatalf("winner %+v", w)
	}
	t.Logf("path %s via %s", ta.Path(), ta.Path().Interface)
	// The P2P transient keeps the stack's optional methods.
	if _, ok := ta.(psi.Aborter); !ok {
		t.Fatal("P2P transient hides Abort")
	}
	if _, ok := ta.(psi.MessageAborter); !ok {
		t.Fatal("P2P transient hides AbortMessage")
	}
	if _, ok := ta.(psi.ContextCloser); !ok {
		t.Fatal("P2P transient hides CloseContext")
	}
	// Each side shows the other's verified key, as Carrier.Peer reports it.
	for _, c := range []struct {
		tr   psi.Transient
		want rendezvous.PeerID
	}{{ta, kb.ID}, {tb, ka.ID}} {
		id, ok := psi.PeerIdentityOf(c.tr)
		if !ok || !id.Verified || rendezvous.IDFromPin(id.Pin) != c.want {
			t.Fatalf("peer identity %v (ok %v, verified %v), want %s", rendezvous.IDFromPin(id.Pin), ok, id.Verified, c.want)
		}
	}
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

// TestP2PUnpinned: a peer name that is neither pinned nor a peer ID, or
// no key of one's own, fails at once.
func TestP2PUnpinned(t *testing.T) {
	ctx := context.Background()
	a := p2pPeer(t, "http://127.0.0.1:1", genKey(t), "", "alice", nil)
	if _, err := a.Establish(ctx); !errors.Is(err, post.ErrAuthentication) {
		t.Errorf("unpinned name: %v", err)
	}
	a, err := association.New(association.Config{Remote: post.Remote{Peer: string(genKey(t).ID), Rendezvous: "http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Establish(ctx); !errors.Is(err, post.ErrAuthentication) {
		t.Errorf("no key: %v", err)
	}
}

// keysAround returns keys for alice and bob with alice's ID sorting
// before bob's (so alice dials) or after it (so bob dials).
func keysAround(t *testing.T, aliceDials bool) (alice, bob *rendezvous.Key) {
	for {
		alice, bob = genKey(t), genKey(t)
		if rendezvous.Controlling(alice.ID, bob.ID) == aliceDials {
			return alice, bob
		}
	}
}

// TestP2PImpersonation: mallory claims alice's ID towards bob, who has
// alice's ID pinned. An honest rendezvous server refuses mallory; a
// compromised one matches them, and then the handshake over the path
// refuses mallory, whichever side listens, on FSP and on QUIC: neither
// gets a transient, and both sides learn why at once (the listener from
// its stack's refusal).
func TestP2PImpersonation(t *testing.T) {
	for _, stack := range []string{"fsp", "quic"} {
		t.Run(stack, func(t *testing.T) { testP2PImpersonation(t, stack == "quic") })
	}
}

func testP2PImpersonation(t *testing.T, noFSP bool) {
	for _, tc := range []struct {
		name               string
		aliceDials, honest bool
	}{
		{"honest server", true, true},
		{"compromised server, bob listens", true, false},
		{"compromised server, bob dials", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := newRendezvous(t, rendezvous.Config{InsecureSkipAuth: !tc.honest})
			ka, kb := keysAround(t, tc.aliceDials)
			km := genKey(t)
			// The handshake timeout only bounds a side that hears nothing;
			// refusals come at once. It is generous so that a loaded
			// machine's slow ICE check does not end a listener first.
			mallory := p2pPeerWith(t, url, km, string(ka.ID), string(kb.ID), nil, 6*time.Second, noFSP)
			bob := p2pPeerWith(t, url, kb, "", "alice", map[string]rendezvous.PeerID{"alice": ka.ID}, 6*time.Second, noFSP)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			bctx := ctx
			if tc.honest {
				var bcancel context.CancelFunc
				bctx, bcancel = context.WithTimeout(ctx, 2*time.Second) // bob waits in vain
				defer bcancel()
			}
			rm, rb := establishBoth(ctx, bctx, mallory, bob)
			for _, r := range []result{rm, rb} {
				if r.err == nil {
					r.t.Close()
					t.Fatal("mallory and bob established a transient")
				}
			}
			t.Logf("mallory: %v", rm.err)
			t.Logf("bob: %v", rb.err)
			dialer, listener := rm.err, rb.err
			if !tc.aliceDials {
				dialer, listener = rb.err, rm.err
			}
			switch {
			case tc.honest:
				if !errors.Is(rm.err, post.ErrAuthentication) {
					t.Errorf("mallory at an honest server: %v", rm.err)
				}
			case !errors.Is(dialer, post.ErrAuthentication):
				t.Errorf("dialler: %v, want ErrAuthentication", dialer)
			case !errors.Is(listener, post.ErrAuthentication):
				t.Errorf("listener: %v, want ErrAuthentication", listener)
			}
		})
	}
}
