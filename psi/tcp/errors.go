package tcp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/postsockets/postsockets/internal/tlsalert"
	"github.com/postsockets/postsockets/post"
)

// classify returns the post sentinel that best describes err, or nil.
func classify(err error) error {
	for _, s := range []error{post.ErrClosed, post.ErrMalformed, post.ErrMessageTooLarge,
		post.ErrAuthentication, post.ErrRefused, post.ErrTimeout, post.ErrReset,
		post.ErrBackpressure, post.ErrNotSupported} {
		if errors.Is(err, s) {
			return nil // already wraps one
		}
	}
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return post.ErrRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, io.ErrUnexpectedEOF):
		return post.ErrReset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT):
		return post.ErrTimeout
	case errors.Is(err, net.ErrClosed):
		return post.ErrClosed
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return post.ErrAuthentication
	}
	return tlsalert.Sentinel(err)
}

// wrap returns err as a *post.OpError that also wraps the matching post
// sentinel error.
func wrap(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil && strings.HasSuffix(err.Error(), oe.Error()) {
		err = netCause{err, oe} // the OpError names what we name already
	}
	if s := classify(err); s != nil {
		err = fmt.Errorf("%w: %w", s, err)
	}
	return &post.OpError{Op: op, Stack: name, Path: path, Err: err}
}

// netCause is an error ending in a *net.OpError's text that prints only
// the OpError's cause, for an error that already names the operation and
// addresses; it still unwraps to the same chain.
type netCause struct {
	err error // its text ends with oe's
	oe  *net.OpError
}

func (e netCause) Error() string {
	return strings.TrimSuffix(e.err.Error(), e.oe.Error()) + e.oe.Err.Error()
}
func (e netCause) Unwrap() error { return e.err }
