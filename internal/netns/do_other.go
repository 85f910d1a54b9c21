//go:build !linux

package netns

import (
	"fmt"

	"github.com/postsockets/postsockets/post"
)

// Do runs fn in the namespace; only Linux has namespaces.
func (n *NS) Do(fn func() error) error {
	if n.name == "" {
		return fn()
	}
	return fmt.Errorf("netns: needs Linux: %w", post.ErrNotSupported)
}
