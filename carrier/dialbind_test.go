package carrier_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// TestInitiateLocalNotBindable: an Initiate from a Local that cannot be
// bound fails with an error wrapping post.ErrInvalid on every stack, as
// a Listen on it does. It wrapped no post sentinel on any stack ('dial
// tcp ...: bind: cannot assign requested address'), found by a program
// written from the docs.
func TestInitiateLocalNotBindable(t *testing.T) {
	foreign := netip.MustParseAddrPort("192.0.2.1:0") // TEST-NET-1, not this host's
	if pc, err := net.ListenPacket("udp", foreign.String()); err == nil {
		pc.Close()
		t.Skip("this host binds 192.0.2.1 (ip_nonlocal_bind?)")
	}
	psk := []byte("a shared secret of 16+ bytes")
	l := listen(t, &carrier.Config{Security: psi.Security{PSK: psk}})
	for _, stack := range []string{"fsp", "quic", "tcp", ""} {
		cfg := &carrier.Config{Security: psi.Security{PSK: psk}, Local: post.Local{Addr: foreign}}
		if stack != "" {
			cfg.Policy.Stack(stack, policy.Require)
		}
		c, err := carrier.Initiate(ctxT(t), l.Remote("127.0.0.1"), cfg)
		if err == nil {
			c.Close()
			t.Fatalf("%q: connected from %v", stack, foreign)
		}
		if !errors.Is(err, post.ErrInvalid) {
			t.Errorf("%q: %v, want an error wrapping ErrInvalid", stack, err)
		}
	}
}
