// Package sockerr names the post sentinel for a local address that a
// socket cannot be bound to, so that Listen and Dial on every stack say
// it alike.
package sockerr

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/postsockets/postsockets/post"
)

// Bind returns err wrapped in post.ErrInvalid when it says a local
// address cannot be bound (a port taken, an address not local, a port
// the process may not bind), and err unchanged otherwise.
func Bind(err error) error {
	if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w: %w", post.ErrInvalid, err)
	}
	return err
}
