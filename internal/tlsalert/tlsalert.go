// Package tlsalert tells which post sentinel a TLS alert stands for, so
// that every stack over crypto/tls (psi/tcp, psi/raw) reports one alike.
package tlsalert

import (
	"crypto/tls"
	"errors"
	"net"
	"reflect"

	"github.com/postsockets/postsockets/post"
)

// refusals are the alerts by which a peer refuses the handshake: our
// credentials, or what we offered (protocol versions, cipher suites,
// ALPN). QUIC reports every alert as a crypto error, which psi/quic
// maps to post.ErrAuthentication; these are the ones a TLS peer sends
// for the same causes.
var refusals = map[uint8]bool{
	40:  true, // handshake_failure
	42:  true, // bad_certificate
	43:  true, // unsupported_certificate
	44:  true, // certificate_revoked
	45:  true, // certificate_expired
	46:  true, // certificate_unknown
	48:  true, // unknown_ca
	49:  true, // access_denied
	51:  true, // decrypt_error
	70:  true, // protocol_version
	71:  true, // insufficient_security
	116: true, // certificate_required
	120: true, // no_application_protocol
}

// Code extracts the code of the TLS alert err carries and whether the
// peer sent it.
func Code(err error) (code uint8, remote, ok bool) {
	// crypto/tls reports an alert as a *net.OpError{Op: "local error"
	// or "remote error"} wrapping an unexported uint8 type.
	var oe *net.OpError
	if errors.As(err, &oe) && (oe.Op == "remote error" || oe.Op == "local error") && oe.Err != nil {
		if v := reflect.ValueOf(oe.Err); v.Kind() == reflect.Uint8 {
			return uint8(v.Uint()), oe.Op == "remote error", true
		}
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return uint8(ae), false, true
	}
	return 0, false, false
}

// Sentinel returns the post sentinel for the TLS alert err carries, or
// nil if it carries none: post.ErrAuthentication for a refused handshake
// (a wrong or missing credential, nothing offered in common),
// post.ErrReset for another alert the peer sent, and post.ErrMalformed
// for one of ours (we could not take what the peer sent).
func Sentinel(err error) error {
	code, remote, ok := Code(err)
	switch {
	case !ok:
		return nil
	case refusals[code]:
		return post.ErrAuthentication
	case remote:
		return post.ErrReset
	}
	return post.ErrMalformed
}
