package psi_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func TestFeatures(t *testing.T) {
	f := psi.Reliable | psi.Fork
	if f.String() != "reliable|fork" || !f.Has(psi.Fork) || f.Has(psi.Datagrams) {
		t.Fatal(f)
	}
	for i := 0; i < 10; i++ {
		g := psi.Features(1 << i)
		if h, ok := psi.ParseFeature(g.String()); !ok || h != g {
			t.Fatalf("round trip %v", g)
		}
	}
}

func TestPSKCertificateDeterministic(t *testing.T) {
	a, err := psi.PSKCertificate([]byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := psi.PSKCertificate([]byte("0123456789abcdef"))
	c, _ := psi.PSKCertificate([]byte("0123456789abcdeX"))
	if !bytes.Equal(a.Certificate[0], b.Certificate[0]) || bytes.Equal(a.Certificate[0], c.Certificate[0]) {
		t.Fatal("PSK certificates must depend on the key and only on it")
	}
	if _, err := psi.PSKCertificate([]byte("short")); err == nil {
		t.Fatal("short PSK accepted")
	}
}

func TestVerifyPeer(t *testing.T) {
	p := testcert.Must()
	chain := p.Leaf.Leaf
	pin := psi.PinCertificate(chain)
	ok := []psi.Security{
		{RootCAs: p.Pool, ServerName: "localhost"},
		{PinnedKeys: []psi.Pin{pin}},
		{InsecureSkipVerify: true},
	}
	for i, s := range ok {
		if err := s.VerifyPeer(chain1(chain), false); err != nil {
			t.Errorf("%d: %v", i, err)
		}
	}
	other := testcert.Must()
	bad := []psi.Security{
		{RootCAs: other.Pool, ServerName: "localhost"},
		{RootCAs: p.Pool, ServerName: "example.com"},
		{PinnedKeys: []psi.Pin{psi.PinCertificate(other.Leaf.Leaf)}},
		{PSK: []byte("0123456789abcdef")},
	}
	for i, s := range bad {
		if err := s.VerifyPeer(chain1(chain), false); !errors.Is(err, post.ErrAuthentication) {
			t.Errorf("%d: got %v, want ErrAuthentication", i, err)
		}
	}
	psk := psi.Security{PSK: []byte("0123456789abcdef")}
	id, _ := psk.Identity()
	if err := psk.VerifyPeer(chain1(id.Leaf), true); err != nil {
		t.Fatalf("PSK identity rejected: %v", err)
	}
}

func chain1(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c} }

func TestPeerIdentity(t *testing.T) {
	p := testcert.Must()
	leaf := p.Leaf.Leaf
	ca := psi.Security{RootCAs: p.Pool}
	if id := ca.PeerIdentity(nil, false); id.Leaf() != nil || id.Verified || id.Pin != (psi.Pin{}) {
		t.Fatalf("empty chain: %+v", id)
	}
	id := ca.PeerIdentity(chain1(leaf), false)
	if !id.Verified || id.PSK || id.Pin != psi.PinCertificate(leaf) || id.Leaf() != leaf {
		t.Fatalf("client side: %+v", id)
	}
	if id := ca.PeerIdentity(chain1(leaf), true); id.Verified {
		t.Fatal("listener without ClientAuth claims a verified client")
	}
	ca.ClientAuth = true
	if id := ca.PeerIdentity(chain1(leaf), true); !id.Verified {
		t.Fatal("listener with ClientAuth: client not marked verified")
	}
	psk := psi.Security{PSK: []byte("0123456789abcdef")}
	c, _ := psk.Identity()
	if id := psk.PeerIdentity(chain1(c.Leaf), true); !id.PSK || !id.Verified {
		t.Fatalf("PSK peer: %+v", id)
	}
	skip := psi.Security{InsecureSkipVerify: true}
	if id := skip.PeerIdentity(chain1(leaf), false); id.Verified {
		t.Fatal("InsecureSkipVerify claims a verified peer")
	}
}
