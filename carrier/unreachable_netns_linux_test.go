package carrier_test

import (
	"errors"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// TestNetnsUnreachable: a dial the kernel refuses at once for want of a
// route (EHOSTUNREACH) fails with an error wrapping post.ErrRefused on
// every stack and the race. TCP's error wrapped no sentinel ("connect:
// no route to host") and QUIC's only post.ErrClosed ("transport
// closed"); FSP's said post.ErrTimeout after the handshake timeout.
func TestNetnsUnreachable(t *testing.T) {
	ns := netns.New(t, "unr")
	if err := ns.Run("ip", "route", "add", "unreachable", "198.51.100.0/24"); err != nil {
		t.Fatal(err)
	}
	for _, stack := range []string{"fsp", "quic", "tcp", ""} {
		ccfg := clientConfig()
		ccfg.Stacks = nsStacks(ns)
		if stack != "" {
			ccfg.Policy.Stack(stack, policy.Require)
		}
		_, err := carrier.Initiate(ctxT(t), post.RemoteName("198.51.100.1:4433"), ccfg)
		if !errors.Is(err, post.ErrRefused) {
			t.Errorf("%q: %v, want ErrRefused", stack, err)
		}
	}
}
