package raw

import (
	"errors"
	"syscall"

	"github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/post"
)

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// quicSentinel returns the post sentinel for an error of quic-go's, or
// nil: a crypto error (a TLS alert, either way) is a refused handshake,
// post.ErrAuthentication, as on psi/quic; what the server reset or
// closed with an error is post.ErrReset, and what we did post.ErrClosed.
func quicSentinel(err error) error {
	var (
		trErr    *quic.TransportError
		appErr   *quic.ApplicationError
		strErr   *quic.StreamError
		resetErr *quic.StatelessResetError
	)
	switch {
	case errors.As(err, &trErr):
		if trErr.ErrorCode.IsCryptoError() {
			return post.ErrAuthentication
		}
		if trErr.Remote {
			return post.ErrReset
		}
		return post.ErrMalformed
	case errors.As(err, &appErr):
		if appErr.Remote {
			return post.ErrReset
		}
		return post.ErrClosed
	case errors.As(err, &strErr):
		if strErr.Remote {
			return post.ErrReset
		}
		return post.ErrClosed
	case errors.As(err, &resetErr):
		return post.ErrReset
	}
	return nil
}
