package carrier

import (
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/quic"
	"github.com/postsockets/postsockets/psi/tcp"
)

// DefaultStacks returns a new set of the built-in stacks in default order
// of preference.
func DefaultStacks() []psi.Stack {
	return []psi.Stack{&fsp.Stack{}, &quic.Stack{}, &tcp.Stack{}}
}
