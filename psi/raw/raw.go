// Package raw holds stack variants that add no hello and no framing of
// their own, so that a Carrier can talk to an ordinary server: plain TCP,
// TLS with a chosen ALPN, and QUIC with a chosen ALPN (one bidirectional
// stream per transient). Messages are delimited by a framer.Framer chosen
// per stack value: framer.LengthPrefix (the default), framer.Line for CRLF
// text protocols such as RESP or SMTP, framer.HTTP for HTTP/1.1 (a
// framer.PairFramer: its reader learns the methods its writer sent), or
// one the application supplies.
//
// TLS and QUIC verify the server exactly as the other stacks do
// (psi.Security: RootCAs, ServerName, PinnedKeys). Plain TCP is
// unencrypted and unauthenticated: its Features lack psi.Encrypted, so a
// policy selects it only when it explicitly opts in (policy.Context.AllowsPlaintext).
//
// These stacks only dial: Listen fails with an error wrapping
// post.ErrNotSupported, since an ordinary server has nothing to accept
// from a raw Carrier that a net.Listener could not.
package raw

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/internal/sockerr"
	"github.com/postsockets/postsockets/internal/tlsalert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// Stack names.
const (
	NameTCP  = "raw-tcp"
	NameTLS  = "raw-tls"
	NameQUIC = "raw-quic"
)

const streamFeatures = psi.Reliable | psi.Ordered | psi.MessageBoundaries

// TCP is plain TCP with no encryption. The zero value frames messages
// with framer.LengthPrefix.
type TCP struct {
	// Framer delimits messages; nil means framer.LengthPrefix.
	Framer framer.Framer
}

// Name returns "raw-tcp".
func (*TCP) Name() string { return NameTCP }

// Features lacks psi.Encrypted: a policy must opt in to choose it.
func (*TCP) Features() psi.Features { return streamFeatures | psi.Plaintext }

// Network returns "tcp".
func (*TCP) Network() string { return "tcp" }

// CheckSecurity refuses trust settings plain TCP cannot honour: pinned
// keys, a PSK, client certificates. RootCAs and ServerName are ignored,
// as there is nothing to verify.
func (*TCP) CheckSecurity(s *psi.Security, server bool) error {
	if len(s.PinnedKeys) > 0 || len(s.PSK) > 0 || len(s.Certificates) > 0 || s.ClientAuth {
		return post.Errorf(post.ErrNotSupported, "raw-tcp is unencrypted and cannot verify pinned keys, a PSK or certificates")
	}
	return nil
}

// Dial connects to remote.
func (s *TCP) Dial(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (psi.Transient, error) {
	if err := s.CheckSecurity(&cfg.Security, false); err != nil {
		return nil, err
	}
	c, err := dialTCP(ctx, remote, cfg)
	if err != nil {
		return nil, err
	}
	return newStream(NameTCP, s.Features(), c, s.Framer, cfg, psi.Identity{}), nil
}

// Listen is not supported.
func (*TCP) Listen(context.Context, netip.AddrPort, *psi.Config) (psi.Listener, error) {
	return nil, post.Errorf(post.ErrNotSupported, "raw-tcp only dials")
}

// TLS is TLS 1.3 over TCP with a chosen ALPN and no hello of its own.
type TLS struct {
	// ALPN is offered to the server; nil means Security.NextProtos.
	ALPN []string
	// Framer delimits messages; nil means framer.LengthPrefix.
	Framer framer.Framer
}

// Name returns "raw-tls".
func (*TLS) Name() string { return NameTLS }

// Features include psi.Encrypted.
func (*TLS) Features() psi.Features { return streamFeatures | psi.Encrypted }

// Network returns "tcp".
func (*TLS) Network() string { return "tcp" }

// Dial connects to remote and completes a TLS handshake that verifies the
// server under cfg.Security.
func (s *TLS) Dial(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (psi.Transient, error) {
	tc, err := clientTLS(&cfg.Security, remote, s.ALPN)
	if err != nil {
		return nil, err
	}
	c, err := dialTCP(ctx, remote, cfg)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(c, tc)
	hctx, cancel := context.WithTimeout(ctx, cfg.Handshake())
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, handshakeError(ctx, err)
	}
	cs := conn.ConnectionState()
	id := cfg.Security.PeerIdentity(cs.PeerCertificates, false)
	return newStream(NameTLS, s.Features(), conn, s.Framer, cfg, id), nil
}

// Listen is not supported.
func (*TLS) Listen(context.Context, netip.AddrPort, *psi.Config) (psi.Listener, error) {
	return nil, post.Errorf(post.ErrNotSupported, "raw-tls only dials")
}

// clientTLS builds the client configuration: psi.Security's, which
// verifies the server, with the chosen ALPN and TLS 1.2 allowed, since
// ordinary servers may not speak 1.3. Without a server name, a chain is
// checked against remote's address (psi.Security.ForDial).
func clientTLS(s *psi.Security, remote netip.AddrPort, alpn []string) (*tls.Config, error) {
	sec := s.ForDial(remote.Addr())
	tc, err := sec.TLSConfig(false)
	if err != nil {
		return nil, err
	}
	if alpn != nil {
		tc.NextProtos = slices.Clone(alpn)
	}
	tc.MinVersion = tls.VersionTLS12
	return tc, nil
}

func dialTCP(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: cfg.Handshake()}
	if cfg.Local.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(cfg.Local)
	}
	c, err := d.DialContext(ctx, "tcp", remote.String())
	if err != nil {
		if cfg.Local.IsValid() {
			err = sockerr.Bind(err) // the Local cannot be bound
		}
		return nil, handshakeError(ctx, err)
	}
	return c, nil
}

// handshakeError maps a dial or handshake failure to a post sentinel.
func handshakeError(ctx context.Context, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, post.ErrAuthentication):
		return err
	case errors.Is(ctxend.Err(ctx), context.DeadlineExceeded):
		return fmt.Errorf("%w: raw dial: %w", post.ErrTimeout, ctxend.Err(ctx))
	case ctx.Err() != nil: // the caller cancelled: no timeout
		return fmt.Errorf("raw dial: %w", ctx.Err())
	case errors.As(err, &ne) && ne.Timeout():
		return post.Errorf(post.ErrTimeout, "raw dial: %v", err)
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return post.Errorf(post.ErrRefused, "raw dial: %v", err)
	}
	var ve *tls.CertificateVerificationError
	var rhe tls.RecordHeaderError
	if errors.As(err, &ve) {
		return post.Errorf(post.ErrAuthentication, "raw dial: %v", err)
	}
	if s := tlsalert.Sentinel(err); s != nil {
		return post.Errorf(s, "raw dial: %v", err)
	}
	if s := quicSentinel(err); s != nil {
		return post.Errorf(s, "raw dial: %v", err)
	}
	switch {
	case errors.As(err, &rhe):
		return post.Errorf(post.ErrMalformed, "raw dial: %v", err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), isReset(err):
		return post.Errorf(post.ErrReset, "raw dial: %v", err)
	}
	return fmt.Errorf("raw dial: %w", err)
}
