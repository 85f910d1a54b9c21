package carrier_test

import (
	"errors"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// TestALPNMismatch: a listener and a client with no ALPN protocol in
// common are refused alike on the TLS stacks, with an error wrapping
// post.ErrAuthentication (which ends a race); FSP carries no ALPN and
// connects. TCP's refusal, the listener's no_application_protocol alert,
// wrapped post.ErrReset instead, found by a program written from
// docs/design.md ("Trust").
func TestALPNMismatch(t *testing.T) {
	psk := []byte("a shared secret of 16+ bytes")
	l := listen(t, &carrier.Config{Security: psi.Security{PSK: psk, NextProtos: []string{"a"}}})
	for _, stack := range []string{"quic", "tcp", "fsp"} {
		t.Run(stack, func(t *testing.T) {
			cfg := &carrier.Config{Security: psi.Security{PSK: psk, NextProtos: []string{"b"}}}
			cfg.Policy.Stack(stack, policy.Require)
			c, err := carrier.Initiate(ctxT(t), l.Remote("127.0.0.1"), cfg)
			if stack == "fsp" {
				if err != nil {
					t.Fatalf("FSP carries no ALPN, yet: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("connected with no ALPN protocol in common")
			}
			if !errors.Is(err, post.ErrAuthentication) {
				t.Errorf("%v, want an error wrapping ErrAuthentication", err)
			}
		})
	}
}
