// Package quic is the QUIC protocol stack for Post Sockets, built on
// github.com/quic-go/quic-go. It is the fallback for networks that pass
// QUIC but not FSP.
//
// A root transient is a QUIC connection and its first bidirectional stream;
// Fork opens another stream on the same connection, which the peer receives
// from the parent transient's AcceptFork. Each stream starts with a short
// header naming its kind (root or fork) and, for a root, the Association.
// Messages are framed on the stream with framer.LengthPrefix. Whole messages
// with a Lifetime and the Unreliable property travel as QUIC datagrams
// tagged with the stream ID of their transient.
//
// With Config.Allow0RTT and a session ticket in Security.SessionCache, Dial
// returns before the handshake completes and idempotent whole messages on
// the root go as 0-RTT data; if the server rejects them they are sent again
// on a new stream, so nothing is lost. Other messages, forks and datagrams
// wait for the handshake. A listener takes 0-RTT data on a ticket at most
// once (antireplay.go), so a replayed first flight is not delivered twice.
// Transient.HandshakeComplete is closed when the handshake completes or
// fails (quic-go's only when it completes), and HandshakeErr says why it
// failed.
//
// Close returns nil once the peer's stack has every byte of the stream:
// the peer ends its side of the stream as soon as everything up to our FIN
// has arrived, whether its application has read it or not. The connection
// is closed once both ends have released every transient (each tells the
// other on a one-byte unidirectional stream) or after the idle timeout, so
// closing never discards what the peer holds unread.
//
// Config.IdleTimeout ends a connection only when the peer stops answering:
// PINGs go every Config.KeepAlive (default a third of the idle timeout),
// so a quiet connection, or one whose reader has paused, stays up. A
// listener on a socket of its own sends stateless resets keyed by its
// private key: restarted with the same key on the same port (after a
// crash), it ends its predecessor's connections at their next packet
// (post.ErrReset) instead of leaving them to the idle timeout.
//
// Errors wrap post's sentinels: a dial to a closed port fails with
// post.ErrRefused (on Linux, where ICMP errors are read during the
// handshake) or post.ErrTimeout, a peer that cannot be trusted with
// post.ErrAuthentication, bad input from the peer with post.ErrMalformed
// (ending only that transient), and use after Close with post.ErrClosed.
package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/internal/sockerr"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Name is the stack name.
const Name = "quic"

// DefaultALPN is the application protocol used when Security.NextProtos is
// empty.
const DefaultALPN = "postsockets"

// features are the capabilities of the QUIC stack.
const features = psi.Reliable | psi.Ordered | psi.Fork | psi.ZeroRTT | psi.Datagrams | psi.Encrypted

// Application and stream error codes sent to the peer.
const (
	codeNoError   = 0x0
	codeClosed    = 0x1 // transient closed before the peer finished
	codeMalformed = 0x2 // bad header or framing
	codeTooLarge  = 0x3 // message over the receiver's limit
	codeRefused   = 0x4 // fork or connection not accepted
	codeAborted   = 0x5 // Abort, or a message abandoned by a failed write
	codeConfirmed = 0x6 // the peer's close confirmed; our message in progress abandoned
)

// Stack is the QUIC protocol stack. The zero value is ready to use and
// opens its own UDP sockets.
type Stack struct {
	// PacketConn, if set, supplies the socket for each Dial and Listen,
	// bound to local (the zero AddrPort means any address and port). The
	// stack owns the returned socket and closes it. Use it to put a network
	// emulator underneath, or to share a socket with another stack.
	PacketConn func(local netip.AddrPort) (net.PacketConn, error)
	// Transport, if set, supplies the quic-go Transport for each Dial and
	// Listen instead, and takes precedence over PacketConn. The caller owns
	// it and closes it once every transient and listener on it is closed.
	// Any number of dials can share one Transport, and it serves one Listen
	// at a time, so one UDP port can both listen and dial; another protocol
	// can read its packets from the same socket with
	// Transport.ReadNonQUICPacket (which queues them only after its first
	// call).
	Transport func(local netip.AddrPort) (*quicgo.Transport, error)
	// MaxHandshakes bounds a listener's handshakes in progress; zero means
	// 128. MaxHandshakesPerSource bounds those from one address, and four
	// times as many from one /24 or /48 prefix; zero means 8. Past them
	// new connections are refused. A client first proves its address
	// with a Retry unless it holds a token from an earlier connection, so
	// no reply to an unproven Initial is larger than it. These apply to
	// the transports the stack opens itself, not to those from Transport.
	MaxHandshakes, MaxHandshakesPerSource int
	// MaxHandshakeRate bounds the handshakes a listener starts a second
	// for one /24 or /48 prefix, a quarter of it for one source address
	// (an IPv6 /64), as the FSP and TCP listeners do (internal/hsrate);
	// zero means 100. A handshake over it is refused while 8 or more are
	// in progress.
	MaxHandshakeRate int
	// MaxConnsPerSource bounds the live connections one source (an IPv4
	// address or an IPv6 /64) holds on a listener, from its first
	// Initial until the connection ends, accepted or not; zero means
	// 1024. Past it a new connection is refused (the client's dial fails
	// with post.ErrRefused). It applies to the transports the stack opens
	// itself, as the handshake bounds do.
	MaxConnsPerSource int
	// MemoryBudget bounds, for a listener, what its peers may have sent
	// that its application has not read: the sum of its connections'
	// receive windows, which quic-go fills with whatever arrives. Zero
	// means DefaultMemoryBudget (256 MiB); negative turns it off. A
	// connection's window starts at 768 KiB (512 KiB a stream), halved
	// down to 16 KiB while over a quarter of the room left in all, in
	// its source address's sixteenth of the budget (an IPv6 /64) and in
	// its /24 or /48 prefix's quarter; 16 KiB windows need room in the
	// total only, so a source still reaches MaxConnsPerSource. A window
	// grows as its reader keeps up only while the budget and its shares
	// have room. A connection without 16 KiB of room is refused (the
	// dialer's error wraps post.ErrRefused). By default one address's
	// first 18 connections get the full window and later ones less. A
	// writer to a connection with a small window waits sooner for the
	// reader (QUIC does not buffer at the sender). Each stream the peer
	// opens after its root is charged 4 KiB for its state within the
	// same shares, from its arrival (its header awaited) on, and
	// refused without room (the dialer's fork fails with post.ErrRefused
	// at its first write or read): by default one address holds about
	// 4,000 forks in all, fewer when its windows are large. A received
	// datagram waiting to be read (or for its stream to arrive) is
	// charged its size the same way, and dropped without room. A
	// stream's 16 KiB read buffer, made by its first read, is charged
	// while under half the budget and the shares is used, and a stream
	// gets a 512-byte one past that. A stream that arrived whole and
	// unread is copied to outlive its connection only with room for the
	// copy, which stays charged until read; without, the peer's close
	// waits for the read. Listener.BudgetStats reports the accounting;
	// dialing ignores it.
	MemoryBudget int64
	// DisableSmallFrameCount turns off a listener's count, on each
	// connection, of the heap quic-go keeps for the STREAM frames it
	// received and the application has not read past: about 130 bytes
	// for a frame under 128 bytes, a packet's buffer (1,452 bytes) for a
	// longer one, which MemoryBudget, counting windows, does not see
	// (uncounted, 1-byte frames left unread pin about 130 times their
	// window, 128-byte ones 12 times; docs/security.md). Counting, the
	// default, closes a connection (as refused, the peer sees
	// post.ErrRefused; BudgetStats.SmallFrameCloses) once that heap
	// exceeds 4 times its window: 3 MiB for 768 KiB, about 24,000
	// one-byte frames or 2,000 of 128 bytes. Counting needs
	// MemoryBudget on, and it costs: quic-go builds a qlog event for
	// every packet a counted connection sends and receives, with a list
	// of its frames (1.7 times the allocations and about 1.25 times the
	// CPU per message on bulk transfer to the listener). A connection traced anyway
	// (psi.Config.TraceDir, POSTSOCKETS_QLOGDIR, psi.Config.Events) is
	// counted whatever this says.
	DisableSmallFrameCount bool

	// tokens keeps the address tokens listeners gave this stack's dials
	// (NEW_TOKEN), so a second dial to a server skips its Retry.
	tokens     quicgo.TokenStore
	tokensOnce sync.Once
	// MaxStreams bounds the streams the peer may have open at once on one
	// connection: its root and its forks, accepted or not. A Fork past
	// the peer's bound waits (back-pressure) until one of them is done, or
	// its context ends. Zero means 1000.
	MaxStreams int
}

var _ psi.Stack = (*Stack)(nil)

// Name returns "quic".
func (*Stack) Name() string { return Name }

// Features returns Reliable|Ordered|Fork|ZeroRTT|Datagrams|Encrypted.
func (*Stack) Features() psi.Features { return features }

// tokenStore returns the stack's store of address tokens for a client,
// nil for a server.
func (s *Stack) tokenStore(server bool) quicgo.TokenStore {
	if server {
		return nil
	}
	s.tokensOnce.Do(func() { s.tokens = newTokenStore() })
	return s.tokens
}

// packetSize is the largest UDP payload QUIC sends: the base PLPMTU of
// RFC 8899, which fits a 1,280-byte IPv6 path (see quicConfig).
const packetSize = 1232

// quicConfig returns the quic-go configuration for cfg.
func (s *Stack) quicConfig(cfg *psi.Config, server bool) *quicgo.Config {
	hs := cfg.Handshake()
	return &quicgo.Config{
		// quic-go aborts a handshake after twice HandshakeIdleTimeout.
		HandshakeIdleTimeout: max(hs/2, time.Millisecond),
		MaxIdleTimeout:       cfg.Idle(),
		KeepAlivePeriod:      keepAlive(cfg),
		EnableDatagrams:      !cfg.Disabled.Has(psi.Datagrams),
		Allow0RTT:            server && cfg.Allow0RTT && !cfg.Disabled.Has(psi.ZeroRTT),
		// Flow-control windows sized for bulk messages; quic-go auto-tunes
		// up to these.
		MaxStreamReceiveWindow:     16 << 20,
		MaxConnectionReceiveWindow: 32 << 20,
		MaxIncomingStreams:         int64(orDefault(s.MaxStreams, 1000)),
		// One unidirectional stream: the peer's "done" (see conn.release).
		MaxIncomingUniStreams: 1,
		Tracer:                tracer(cfg),
		TokenStore:            s.tokenStore(server),
		// quic-go (v0.65) probes the path MTU upward but has no black-hole
		// detection: a path whose MTU falls mid-transfer would stall the
		// connection for good. Stay at the base PLPMTU that fits any
		// 1,280-byte path, as FSP's base does (docs/design.md, Path MTU).
		DisablePathMTUDiscovery: true,
		InitialPacketSize:       packetSize,
	}
}

// keepAlive is the PING interval: cfg.KeepAlive, else a third of the idle
// timeout. A connection whose reader has paused sends nothing while flow
// control holds its data back; the PINGs keep it up for as long as the
// peer answers, so only an unanswered peer idles out.
func keepAlive(cfg *psi.Config) time.Duration {
	if cfg.KeepAlive > 0 {
		return cfg.KeepAlive
	}
	return max(cfg.Idle()/3, time.Millisecond)
}

// tlsConfig returns the TLS configuration from cfg.Security.
func tlsConfig(cfg *psi.Config, server bool, remote netip.AddrPort) (*tls.Config, error) {
	sec := cfg.Security
	if !server {
		sec = sec.ForDial(remote.Addr())
	}
	tc, err := sec.TLSConfig(server)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", post.ErrAuthentication, err)
	}
	if len(tc.NextProtos) == 0 {
		tc.NextProtos = []string{DefaultALPN}
	}
	if server {
		// quic-go drops a refused client without telling the listener;
		// log why (the error wraps post.ErrAuthentication).
		verify, log := tc.VerifyConnection, cfg.Log()
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verify(cs)
			if err != nil {
				log.Debug("quic: client refused", "stack", Name, "err", err)
			}
			return err
		}
	}
	if !server && tc.ClientSessionCache != nil {
		key := cfg.Security.ServerName
		if key == "" {
			key = remote.String()
		}
		tc.ClientSessionCache = keyedCache{c: tc.ClientSessionCache, key: "quic:" + key}
	}
	return tc, nil
}

// keyedCache stores QUIC session tickets under a key of their own: crypto/tls
// has no remote address to key them by when ServerName is empty, and a QUIC
// ticket carries state a TCP+TLS resumption cannot use.
type keyedCache struct {
	c   tls.ClientSessionCache
	key string
}

func (k keyedCache) Put(_ string, cs *tls.ClientSessionState) { k.c.Put(k.key, cs) }

// Get returns a copy of the cached session, for one dial: quic-go sets
// EarlyData on the session state it resumes from, and crypto/tls reuses
// a TLS 1.3 ticket, so concurrent dials to one server that resumed from
// the cached state itself wrote it at once (a data race).
func (k keyedCache) Get(string) (*tls.ClientSessionState, bool) {
	cs, ok := k.c.Get(k.key)
	if !ok || cs == nil {
		return cs, ok
	}
	ticket, st, err := cs.ResumptionState()
	if err != nil || st == nil {
		return nil, false
	}
	own := *st
	own.Extra = slices.Clone(st.Extra) // quic-go appends to it when storing
	if cs, err = tls.NewResumptionState(ticket, &own); err != nil {
		return nil, false
	}
	return cs, true
}

// openTransport returns the Transport for local, or for a dial to remote;
// own reports whether the stack opened the UDP socket itself.
func (s *Stack) openTransport(local, remote netip.AddrPort) (tr *transport, own bool, err error) {
	if s.Transport != nil {
		t, err := s.Transport(local)
		if err != nil {
			return nil, false, err
		}
		return &transport{t: t, refs: 1}, false, nil
	}
	pc, own, err := s.openPacketConn(local, remote)
	if err != nil {
		return nil, false, err
	}
	return &transport{t: &quicgo.Transport{Conn: pc}, pc: pc, owned: true, refs: 1}, own, nil
}

// openPacketConn opens the UDP socket for local, or for a dial to remote.
func (s *Stack) openPacketConn(local, remote netip.AddrPort) (net.PacketConn, bool, error) {
	if s.PacketConn != nil {
		pc, err := s.PacketConn(local)
		return pc, false, err
	}
	network := "udp"
	if !local.IsValid() && remote.IsValid() {
		if remote.Addr().Unmap().Is4() {
			local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
			network = "udp4"
		} else {
			local = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
			network = "udp6"
		}
	}
	var ua *net.UDPAddr
	if local.IsValid() {
		ua = net.UDPAddrFromAddrPort(local)
	}
	pc, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, false, sockerr.Bind(err)
	}
	return pc, true, nil
}

// Dial opens a QUIC connection to remote and its root stream. It fails with
// an error wrapping post.ErrRefused, post.ErrTimeout or
// post.ErrAuthentication when the peer cannot be reached or trusted. When
// the server asks for a client certificate, Dial returns only once the
// server has accepted it. A 0-RTT dial returns before the handshake
// completes; a handshake failure then shows on the transient's first
// blocking call.
func (s *Stack) Dial(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (psi.Transient, error) {
	t, err := s.dial(ctx, remote, nil, cfg)
	if err != nil {
		return nil, &post.OpError{Op: "dial", Stack: Name, Path: remote.String(), Err: err}
	}
	return t, nil
}

// dial dials remote, or ua if it is set (an address of a PacketConn the
// caller supplied, which need not be UDP's).
func (s *Stack) dial(ctx context.Context, remote netip.AddrPort, ua net.Addr, cfg *psi.Config) (*Transient, error) {
	if cfg == nil {
		cfg = &psi.Config{}
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !remote.IsValid() && ua == nil {
		return nil, post.Errorf(post.ErrUnknownHost, "invalid address %v", remote)
	}
	tc, err := tlsConfig(cfg, false, remote)
	if err != nil {
		return nil, err
	}
	auth := watchClientAuth(tc)
	tr, own, err := s.openTransport(cfg.Local, remote)
	if err != nil {
		return nil, err
	}
	pc := tr.pc
	if own {
		setRecvErr(pc, true)
	}

	ctx, cancel := context.WithTimeout(withHooks(ctx), cfg.Handshake())
	defer cancel()
	qcfg := s.quicConfig(cfg, false)
	if ua == nil {
		ua = net.UDPAddrFromAddrPort(remote)
	}
	var qc *quicgo.Conn
	if cfg.Allow0RTT && !cfg.Disabled.Has(psi.ZeroRTT) {
		qcfg.Tracer = gateTracer(qcfg.Tracer)
		qc, err = tr.t.DialEarly(ctx, ua, tc, qcfg)
	} else {
		qc, err = tr.t.Dial(ctx, ua, tc, qcfg)
	}
	if err != nil {
		tr.release()
		return nil, dialError(ctx, err)
	}
	if own {
		// Turn ICMP reporting off once the handshake is done; for a 0-RTT
		// dial, once it completes in the background.
		select {
		case <-qc.HandshakeComplete():
			setRecvErr(pc, false)
		default:
			go func() {
				select {
				case <-qc.HandshakeComplete():
				case <-qc.Context().Done():
				}
				setRecvErr(pc, false)
			}()
		}
	}
	c := newConn(qc, tr, cfg, false, nil, nil, nil)
	c.ticket = auth.ticket()
	select {
	case <-qc.HandshakeComplete():
		// Fail here, not on first use, if the server refuses our
		// certificate.
		if err := auth.wait(ctx, qc); err != nil {
			c.abort(codeClosed, "")
			return nil, err
		}
	default:
		// 0-RTT: the session resumed was accepted with its certificate.
	}
	t, err := c.openRoot(ctx, cfg.Association)
	if err != nil {
		c.abort(codeClosed, "")
		return nil, err
	}
	return t, nil
}

// dialError maps a quic-go dial failure onto post's sentinel errors.
func dialError(ctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: handshake: %w", post.ErrTimeout, err)
	}
	if errors.Is(ctxend.Err(ctx), context.DeadlineExceeded) || (ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded)) {
		return fmt.Errorf("%w: handshake: %v: %w", post.ErrTimeout, err, context.DeadlineExceeded)
	}
	return mapError(err)
}

// mapError wraps a quic-go error with the matching post sentinel; the
// original stays in the chain for errors.As.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	var (
		appErr   *quicgo.ApplicationError
		trErr    *quicgo.TransportError
		strErr   *quicgo.StreamError
		idleErr  *quicgo.IdleTimeoutError
		hsErr    *quicgo.HandshakeTimeoutError
		resetErr *quicgo.StatelessResetError
	)
	switch {
	case errors.Is(err, post.ErrClosed), errors.Is(err, post.ErrMalformed),
		errors.Is(err, post.ErrMessageTooLarge), errors.Is(err, post.ErrAuthentication),
		errors.Is(err, post.ErrTimeout), errors.Is(err, post.ErrRefused),
		errors.Is(err, post.ErrReset):
		return err
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return tag(post.ErrRefused, err)
	case errors.As(err, &idleErr), errors.As(err, &hsErr):
		return tag(post.ErrTimeout, err)
	case errors.As(err, &trErr):
		if trErr.ErrorCode.IsCryptoError() {
			return tag(post.ErrAuthentication, err)
		}
		if trErr.ErrorCode == quicgo.ConnectionRefused {
			return tag(post.ErrRefused, err)
		}
		if trErr.Remote {
			return tag(post.ErrReset, err)
		}
		if trErr.ErrorCode == quicgo.InternalError && unreachableText(trErr.ErrorMessage) {
			// A send the kernel refused for want of a route: quic-go
			// keeps only the text of the error.
			return tag(post.ErrRefused, err)
		}
		return tag(post.ErrMalformed, err)
	case errors.As(err, &appErr):
		if !appErr.Remote {
			return tag(post.ErrClosed, err)
		}
		switch appErr.ErrorCode {
		case codeNoError:
			return fmt.Errorf("%w: connection closed by peer: %w", post.ErrClosed, err)
		case codeRefused:
			return tag(post.ErrRefused, err)
		case codeMalformed:
			return fmt.Errorf("%w: peer: %w", post.ErrMalformed, err)
		}
		return tag(post.ErrReset, err)
	case errors.As(err, &strErr):
		if !strErr.Remote {
			return tag(post.ErrClosed, err)
		}
		switch strErr.ErrorCode {
		case codeRefused:
			return tag(post.ErrRefused, err)
		case codeTooLarge:
			return fmt.Errorf("%w: peer: %w", post.ErrMessageTooLarge, err)
		case codeMalformed:
			return fmt.Errorf("%w: peer: %w", post.ErrMalformed, err)
		}
		return tag(post.ErrReset, err)
	case errors.Is(err, quicgo.Err0RTTRejected):
		return tag(post.ErrReset, err)
	case errors.As(err, &resetErr):
		return tag(post.ErrReset, err)
	case errors.Is(err, quicgo.ErrTransportClosed), errors.Is(err, quicgo.ErrServerClosed),
		errors.Is(err, net.ErrClosed), errors.Is(err, quicgo.ErrStreamClosed):
		return tag(post.ErrClosed, err)
	case errors.Is(err, context.DeadlineExceeded):
		return tag(post.ErrTimeout, err)
	}
	return err
}

// tagged is an error under a post sentinel. Its text does not repeat the
// sentinel's last word when err's text starts with it, as quic-go's
// "timeout: no recent network activity" does.
type tagged struct{ sentinel, err error }

func tag(sentinel, err error) error { return &tagged{sentinel, err} }

func (e *tagged) Error() string {
	s, m := e.sentinel.Error(), e.err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		m = strings.TrimPrefix(m, s[i+2:]+": ")
	}
	return s + ": " + m
}

func (e *tagged) Unwrap() []error { return []error{e.sentinel, e.err} }

// transport is a quic-go Transport shared by a listener and the
// connections it accepted, or used by one dialled connection. One the
// stack made closes when the last user releases it.
type transport struct {
	t     *quicgo.Transport
	pc    net.PacketConn // nil unless owned
	owned bool           // the stack made t and closes it
	mu    sync.Mutex
	refs  int
}

func (t *transport) acquire() {
	t.mu.Lock()
	t.refs++
	t.mu.Unlock()
}

func (t *transport) release() {
	t.mu.Lock()
	t.refs--
	last := t.refs == 0
	t.mu.Unlock()
	if last && t.owned {
		t.t.Close()
		t.pc.Close()
	}
}

// unreachableText reports whether msg ends with the text of an error
// saying the remote host or network cannot be reached.
func unreachableText(msg string) bool {
	for _, e := range []syscall.Errno{syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN} {
		if strings.HasSuffix(msg, e.Error()) {
			return true
		}
	}
	return false
}
