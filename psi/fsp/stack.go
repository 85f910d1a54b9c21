package fsp

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/postsockets/postsockets/internal/srcaddr"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Stack is FSP as a psi.Stack. The zero value dials and listens on
// sockets of its own; with Transport set it shares that transport's
// socket (for example with QUIC).
type Stack struct {
	Transport *Transport
	// Base, if set, supplies the FSP-specific settings (windows, buffers,
	// congestion control); psi.Config fields override the shared ones.
	Base *Config
}

var _ psi.Stack = (*Stack)(nil)

// TransientFeatures are the features of FSP transients.
const TransientFeatures = psi.Reliable | psi.Ordered | psi.MessageBoundaries | psi.Encrypted | psi.Mobility |
	psi.Fork | psi.ZeroRTT | psi.MilkClones

// Name returns "fsp".
func (*Stack) Name() string { return "fsp" }

// Features returns what FSP transients offer.
func (*Stack) Features() psi.Features { return TransientFeatures }

// maxListenerChain bounds the encoded chain a listener sends in
// ACK_CONNECT_REQ, leaving room for the rest of the packet.
const maxListenerChain = maxFlightSize - 512

// chainLen is the encoded size of a certificate chain.
func chainLen(id *tls.Certificate) int {
	n := 0
	for _, der := range id.Certificate {
		n += 2 + len(der)
	}
	return n
}

// CheckSecurity (psi.SecurityChecker) reports whether a listener's
// certificate chain fits an FSP handshake packet: the Association leaves
// FSP out of a listener with a larger one rather than fail it. A
// dialler's chain is checked only when a listener asks for it.
func (*Stack) CheckSecurity(s *psi.Security, server bool) error {
	if !server {
		return nil
	}
	id, err := s.Identity()
	if err != nil {
		return nil // Listen says what is missing
	}
	if len(id.Certificate) > wire.MaxChain {
		return post.Errorf(post.ErrNotSupported, "fsp: a chain of %d certificates; at most %d fit", len(id.Certificate), wire.MaxChain)
	}
	if n := chainLen(id); n > maxListenerChain {
		return post.Errorf(post.ErrNotSupported, "fsp: the certificate chain takes %d bytes; an FSP handshake flight carries at most %d", n, maxListenerChain)
	}
	return nil
}

func (s *Stack) config(pc *psi.Config) *Config {
	cfg := s.Base.clone()
	if pc == nil {
		return cfg
	}
	// Every trust setting holds on FSP as on TLS: ClientAuth makes the
	// listener require CLIENT_AUTH, checked by VerifyPeer; a PSK keys the
	// handshake, which proves the initiator holds it.
	cfg.Security = pc.Security
	cfg.MaxMessageSize = pc.MaxMessageSize
	cfg.HandshakeTimeout = pc.HandshakeTimeout
	cfg.IdleTimeout = pc.IdleTimeout
	cfg.KeepAlive = pc.KeepAlive
	cfg.Association = pc.Association
	cfg.Allow0RTT = pc.Allow0RTT && !pc.Disabled.Has(psi.ZeroRTT)
	cfg.NoForks = pc.Disabled.Has(psi.Fork)
	if pc.Linger > 0 {
		cfg.Linger = pc.Linger
	}
	if pc.Logger != nil {
		cfg.Logger = pc.Logger
	}
	if pc.TraceDir != "" {
		cfg.TraceDir = pc.TraceDir
	}
	return cfg
}

// Dial opens a transient to remote.
func (s *Stack) Dial(ctx context.Context, remote netip.AddrPort, pc *psi.Config) (psi.Transient, error) {
	cfg := s.config(pc)
	var (
		c   *Conn
		err error
	)
	if s.Transport != nil {
		c, err = s.Transport.Dial(ctx, net.UDPAddrFromAddrPort(remote), cfg)
	} else {
		var local netip.AddrPort
		if pc != nil {
			local = pc.Local
		}
		c, err = dialUDP(ctx, local, remote, cfg)
	}
	if err != nil {
		return nil, err
	}
	return &transient{c: c, assoc: cfg.Association}, nil
}

// Listen accepts transients on local.
func (s *Stack) Listen(ctx context.Context, local netip.AddrPort, pc *psi.Config) (psi.Listener, error) {
	cfg := s.config(pc)
	var (
		l   *Listener
		err error
	)
	if s.Transport != nil {
		l, err = s.Transport.Listen(cfg)
	} else {
		l, err = Listen(local, cfg)
	}
	if err != nil {
		return nil, err
	}
	return &listener{l}, nil
}

type listener struct{ l *Listener }

// ListenerOf returns the FSP listener behind a psi.Listener made by
// Stack, or nil: its Stats report the memory budget.
func ListenerOf(l psi.Listener) *Listener {
	if fl, ok := l.(*listener); ok {
		return fl.l
	}
	return nil
}

func (l *listener) Accept(ctx context.Context) (psi.Transient, error) {
	c, err := l.l.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return &transient{c: c, assoc: c.Association()}, nil
}

// Refused reports clients refused for their credentials: see
// Listener.Refused.
func (l *listener) Refused() <-chan error { return l.l.Refused() }

func (l *listener) Addr() netip.AddrPort { return addrPort(l.l.Addr()) }
func (l *listener) Close() error         { return l.l.Close() }

func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// transient adapts a Conn to psi.Transient.
type transient struct {
	c     *Conn
	assoc [16]byte
	fork  *psi.Identity                // a fork's peer: that of the transient it came from
	id    atomic.Pointer[psi.Identity] // the root's peer, once the handshake verified it
	src   srcaddr.Cache                // the local address where no packet told it yet
}

// ConnOf returns the FSP connection behind a transient made by Stack, or
// nil.
func ConnOf(t psi.Transient) *Conn {
	if tr, ok := t.(*transient); ok {
		return tr.c
	}
	return nil
}

// Class reports the traffic class: psi.Milk for milk clones.
func (t *transient) Class() psi.TrafficClass { return t.c.Class() }

func (t *transient) Stack() string { return "fsp" }

// PeerIdentity returns what the handshake verified about the peer: the
// listener's chain at the initiator, the client's CLIENT_AUTH chain at a
// listener that required one (with a PSK, the PSK-derived certificate).
func (t *transient) PeerIdentity() psi.Identity {
	if t.fork != nil {
		return *t.fork
	}
	if id := t.id.Load(); id != nil {
		return *id
	}
	chain := t.c.PeerCertificates()
	id := t.c.cfg.Security.PeerIdentity(chain, !t.c.initiator)
	if len(chain) > 0 {
		t.id.Store(&id)
	}
	return id
}

func (t *transient) Features() psi.Features { return TransientFeatures }

// Used0RTT reports whether the listener accepted 0-RTT data; see
// Conn.Used0RTT.
func (t *transient) Used0RTT() bool { return t.c.Used0RTT() }

// HandshakeComplete is closed once the handshake ended; a 0-RTT dial
// returns before.
func (t *transient) HandshakeComplete() <-chan struct{} { return t.c.HandshakeComplete() }

// HandshakeErr is why the handshake failed; see Conn.HandshakeErr.
func (t *transient) HandshakeErr() error { return t.c.HandshakeErr() }

func (t *transient) Association() [16]byte { return t.assoc }
func (t *transient) Close() error          { return t.c.Close() }

// CloseContext is Close bounded by ctx (psi.ContextCloser).
func (t *transient) CloseContext(ctx context.Context) error { return t.c.CloseContext(ctx) }

// Abort ends the transient at once and resets the peer (psi.Aborter).
func (t *transient) Abort(err error) { t.c.Abort(err) }

// AbortMessage abandons the message being written (psi.MessageAborter):
// an abort marker ends it, the peer's reader gets an error wrapping
// post.ErrReset for it, and the transient goes on.
func (t *transient) AbortMessage(ctx context.Context) error {
	return t.c.AbortMessage(ctx)
}

func (t *transient) Paths() []post.Path {
	var out []post.Path
	for _, p := range t.c.Paths() {
		out = append(out, post.Path{
			Local:  addrPort(p.Local),
			Remote: addrPort(p.Remote),
			MTU:    p.MTU,
			RTT:    p.RTT,
			RTTVar: p.RTTVar,
			Loss:   p.Loss,
			Active: p.Active,
		})
	}
	return out
}
func (t *transient) ReadMessage(ctx context.Context, p []byte) (int, bool, error) {
	return t.c.ReadMessage(ctx, p)
}

func (t *transient) WriteMessage(ctx context.Context, p []byte, end bool, opts *psi.WriteOptions) error {
	var acked func()
	more := false
	if end && opts != nil {
		acked, more = opts.Acked, opts.More
	}
	// Only a message marked idempotent may travel as 0-RTT data.
	idem := opts != nil && opts.Properties != nil && opts.Properties.Idempotent
	if done, err := t.c.writeEarly(ctx, p, end, acked, idem); done || err != nil {
		return err
	}
	return t.c.writeMessage(ctx, p, end, acked, more)
}

// Flush sends messages held back by psi.WriteOptions.More.
func (t *transient) Flush(context.Context) error {
	t.c.Flush()
	return nil
}

func (t *transient) Fork(ctx context.Context, class psi.TrafficClass) (psi.Transient, error) {
	c, err := t.c.ForkClass(ctx, class)
	if err != nil {
		return nil, err
	}
	return t.forked(c), nil
}

func (t *transient) AcceptFork(ctx context.Context) (psi.Transient, error) {
	c, err := t.c.AcceptFork(ctx)
	if err != nil {
		return nil, err
	}
	return t.forked(c), nil
}

// forked wraps a clone of t's connection; it keeps t's peer identity.
func (t *transient) forked(c *Conn) *transient {
	id := t.PeerIdentity()
	return &transient{c: c, assoc: t.assoc, fork: &id}
}

func (t *transient) Path() post.Path {
	st := t.c.Stats()
	remote := addrPort(t.c.RemoteAddr())
	return post.Path{
		// The address the peer's packets come to (IP_PKTINFO); before
		// the first, or where the system does not say, the one it
		// sends from to the peer.
		Local:  t.src.For(t.c.localAddrPort(), remote),
		Remote: remote,
		MTU:    t.c.PathMTU(),
		RTT:    st.SmoothedRTT,
		RTTVar: st.RTTVar,
		Active: true,
	}
}

// Resumed reports whether the connection resumed a session from a ticket.
func (t *transient) Resumed() bool { return t.c.Resumed() }
