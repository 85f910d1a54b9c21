package netns

import (
	"context"
	"net/netip"

	"github.com/postsockets/postsockets/psi"
)

// Stack returns s with its Dial and Listen run inside ns, so the sockets
// they open live there. An Association races stacks on goroutines of its
// own, which would otherwise open them in the caller's namespace. Forks
// that reuse the root's socket (FSP clones, QUIC streams) stay in ns; a
// stack that opens a new socket per fork outside Dial does not.
func Stack(s psi.Stack, ns *NS) psi.Stack { return nsStack{s, ns} }

type nsStack struct {
	psi.Stack
	ns *NS
}

func (s nsStack) Network() string { return psi.StackNetwork(s.Stack) }

func (s nsStack) Dial(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (t psi.Transient, err error) {
	err = s.ns.Do(func() error {
		var e error
		t, e = s.Stack.Dial(ctx, remote, cfg)
		return e
	})
	return t, err
}

func (s nsStack) Listen(ctx context.Context, local netip.AddrPort, cfg *psi.Config) (l psi.Listener, err error) {
	err = s.ns.Do(func() error {
		var e error
		l, e = s.Stack.Listen(ctx, local, cfg)
		return e
	})
	return l, err
}
