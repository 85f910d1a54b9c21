// Package tcp is the TCP+TLS protocol stack: Post Sockets messages framed
// on a TLS 1.3 stream over TCP.
//
// Each transient is one TCP connection. After the TLS handshake the client
// sends a small hello with the Association ID, and the server answers with a
// random fork token for the new transient. A fork is a further connection
// whose hello names the parent's token, so the listener hands it to the
// parent's AcceptFork rather than to Accept. Only the dialling side can
// fork, since TCP cannot dial back through NATs and firewalls.
//
// Messages are delimited by a framer.Framer (length-prefixed by default);
// both ends must use the same one. Large messages stream through in parts
// and are never held whole. Every WriteMessage is flushed unless
// WriteOptions.More holds it back. Close returns nil once the peer's
// kernel has acknowledged everything sent (on Linux; elsewhere once the
// peer has ended its stream).
//
// Config.IdleTimeout does not close quiet transients: it sets how long TCP
// keep-alive probes (every Config.KeepAlive, at most a third of the idle
// timeout, at least 1 s) may go unanswered before the kernel drops a dead
// peer, and, on Linux, how long sent data may go unacknowledged. Those
// hear from the next hop's kernel, which behind a proxy that went dark
// (it acknowledges but forwards nothing) answers for good; so, on Linux,
// two ends whose framing has a heartbeat (framer.Heartbeater: the
// default's) agree liveness frames in the hello. Each sends a heartbeat
// when it has sent nothing for the keep-alive interval (at most a third
// of the idle timeout agreed, the smaller end's), and a transient that
// gets no byte from its peer for that idle timeout, its receive window
// open, fails with an error wrapping post.ErrTimeout. A paused reader's
// shut window excuses the silence. Peers from before 2 December neither
// ask nor answer, and keep the kernel's checks alone. Config.Allow0RTT is
// ignored.
package tcp

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

const name = "tcp"

// Features are the features of the TCP stack and its transients.
const Features = psi.Reliable | psi.Ordered | psi.Fork | psi.Encrypted

// Stack is the TCP+TLS protocol stack. The zero value is ready to use.
type Stack struct {
	// Framer delimits messages on the stream; nil means
	// framer.LengthPrefix. Both ends must use the same framing.
	Framer framer.Framer
	// KeepAlive is the TCP keep-alive interval used when
	// Config.KeepAlive is zero. Zero means 15 s; negative disables
	// keep-alives unless the Config asks for them. Either is capped at a
	// third of Config.IdleTimeout, so a vanished peer is found within it.
	KeepAlive time.Duration
	// Logger is used when Config.Logger is nil.
	Logger *slog.Logger
	// Linger bounds how long Close waits for the peer to acknowledge
	// everything sent, when Config.Linger is zero; zero means
	// psi.DefaultLinger.
	Linger time.Duration
	// Backlog bounds the transients a listener has accepted but Accept has
	// not returned; zero means 64.
	Backlog int
	// MaxUnacceptedForks bounds the forks the peer made of one server
	// transient that AcceptFork has not returned; zero means Backlog.
	// Past it, as many again are held back: the peer's Fork waits, until
	// AcceptFork makes room or ServerHandshakeTimeout passes, and then
	// fails with an error wrapping post.ErrBackpressure. Further forks
	// fail so at once. A fork is never dropped once Fork returned it.
	MaxUnacceptedForks int
	// MaxHandshakes bounds concurrent server handshakes; zero means 128.
	// When all are taken, a newcomer evicts the handshake stalled longest
	// whose client has sent nothing; failing that, one silent for a
	// second from the /24 or /48 prefix holding the most, if that holds
	// more than the newcomer's. A handshake making progress is not
	// evicted. On Linux the listener also sets TCP_DEFER_ACCEPT, so a
	// socket that sends nothing within the handshake timeout never takes
	// a slot.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds concurrent server handshakes from one
	// address; four times as many are allowed from one /24 (IPv4) or /48
	// (IPv6) prefix. Zero means MaxHandshakes/16, at least 1. Connections
	// over quota are reset at once.
	MaxHandshakesPerSource int
	// ServerHandshakeTimeout bounds the TLS handshake and hello of an
	// incoming connection; zero means 3 s. Config.HandshakeTimeout caps it.
	ServerHandshakeTimeout time.Duration
	// MaxHandshakeRate bounds the handshakes a listener starts a second
	// for one /24 or /48 prefix, a quarter of it for one source address
	// (an IPv6 /64), as the FSP and QUIC listeners do (internal/hsrate);
	// zero means 100. It applies while 8 or more handshakes are in
	// progress; connections over it are then reset at once.
	MaxHandshakeRate int
	// MaxConnsPerSource bounds the live connections, roots and forks,
	// accepted or waiting, that one source (an IPv4 address or an IPv6
	// /64) may hold on a listener; zero means 1024. A connection counts
	// from the end of its TLS handshake until it is closed (or aborted,
	// or dropped with its parent or the listener); past the bound a new
	// root's Dial fails with an error wrapping post.ErrRefused, as on FSP
	// and QUIC, and a Fork with one wrapping post.ErrBackpressure (a fork
	// is a connection of its own here, a stream on the other stacks).
	MaxConnsPerSource int
	// MaxConns bounds the live connections, roots and forks, of a
	// listener in all, and those of one /24 or /48 prefix to a quarter of
	// it (or MaxConnsPerSource, if more); past either a connection is
	// refused as past MaxConnsPerSource.
	// Each holds a file descriptor, and a process out of them can open no
	// socket or file, for any stack. Zero means half the process's
	// open-file limit (RLIMIT_NOFILE) when the listener starts, between
	// 64 and 65,536 (16,384 where there is no such limit).
	MaxConns int
}

var _ psi.Stack = Stack{}

// Name returns "tcp".
func (Stack) Name() string { return name }

// Network returns "tcp" (psi.Networker), so racing interleaves it with
// the UDP-based stacks.
func (Stack) Network() string { return "tcp" }

// Features returns Reliable|Ordered|Fork|Encrypted.
func (Stack) Features() psi.Features { return Features }

func (s *Stack) framer() framer.Framer {
	if s.Framer == nil {
		return framer.LengthPrefix{}
	}
	return s.Framer
}

func (s *Stack) logger(cfg *psi.Config) *slog.Logger {
	if cfg.Logger == nil && s.Logger != nil {
		return s.Logger
	}
	return cfg.Log()
}

func (s *Stack) backlog() int {
	if s.Backlog <= 0 {
		return 64
	}
	return s.Backlog
}

func (s *Stack) maxUnacceptedForks() int {
	if s.MaxUnacceptedForks > 0 {
		return s.MaxUnacceptedForks
	}
	return s.backlog()
}

func (s *Stack) maxConnsPerSource() int {
	if s.MaxConnsPerSource <= 0 {
		return 1024
	}
	return s.MaxConnsPerSource
}

func (s *Stack) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	n := fileLimit() / 2
	if n <= 0 {
		return 16384
	}
	return min(max(n, 64), 65536)
}

func (s *Stack) maxHandshakes() int {
	if s.MaxHandshakes <= 0 {
		return 128
	}
	return s.MaxHandshakes
}

func (s *Stack) perSource() int {
	if s.MaxHandshakesPerSource > 0 {
		return s.MaxHandshakesPerSource
	}
	return max(1, s.maxHandshakes()/16)
}

func (s *Stack) perPrefix() int {
	return min(4*s.perSource(), s.maxHandshakes())
}

// keepAlive derives TCP keep-alive settings from the idle timeout: the
// first probe after a third of it of quiet (or after the configured
// interval, if shorter), then probes at that interval until about the
// idle timeout has passed unanswered. The duration is the
// net.Dialer/ListenConfig KeepAlive field: -1 disables.
func (s *Stack) keepAlive(cfg *psi.Config) (net.KeepAliveConfig, time.Duration) {
	iv := cfg.KeepAlive
	if iv <= 0 {
		iv = s.KeepAlive
	}
	idle := cfg.Idle()
	switch {
	case iv < 0:
		return net.KeepAliveConfig{}, -1
	case iv == 0:
		iv = 15 * time.Second
	}
	iv = min(iv, idle/3)
	iv = max(iv, time.Second) // the kernel counts in seconds
	count := max(1, int((idle-iv+iv-1)/iv))
	return net.KeepAliveConfig{Enable: true, Idle: iv, Interval: iv, Count: count}, iv
}

// Dial connects to remote, runs the TLS handshake and the hello exchange,
// all bounded by ctx and cfg.Handshake(). cfg may be nil.
//
// With certificate-chain verification and no Security.ServerName, the
// server's certificate must be valid for remote's IP address.
func (s Stack) Dial(ctx context.Context, remote netip.AddrPort, cfg *psi.Config) (psi.Transient, error) {
	if cfg == nil {
		cfg = &psi.Config{}
	}
	d := &dialer{stack: s, remote: remote, cfg: *cfg, forking: make(chan struct{}, maxForking)}
	sec := cfg.Security.ForDial(remote.Addr())
	tc, err := sec.TLSConfig(false)
	if err != nil {
		return nil, wrap("dial", remote.String(), err)
	}
	if tc.ClientSessionCache == nil {
		// Let forks resume the root's TLS session.
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	d.tls = tc
	t, err := d.dial(ctx, kindRoot, token{}, cfg.Local)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Listen accepts TLS connections on local. The listener needs a
// certificate or a PSK in cfg.Security. cfg may be nil.
func (s Stack) Listen(ctx context.Context, local netip.AddrPort, cfg *psi.Config) (psi.Listener, error) {
	if cfg == nil {
		cfg = &psi.Config{}
	}
	addr := ":0"
	if local.IsValid() {
		addr = local.String()
	}
	sec := cfg.Security
	tc, err := sec.TLSConfig(true)
	if err != nil {
		return nil, wrap("listen", addr, err)
	}
	var lc net.ListenConfig
	lc.KeepAliveConfig, lc.KeepAlive = s.keepAlive(cfg)
	lc.Control = deferAccept(s.serverHandshakeTimeout(cfg))
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, wrap("listen", addr, err)
	}
	return newListener(s, *cfg, tc, ln.(*net.TCPListener)), nil
}

// addrPort returns a's address and port with any IPv4-in-IPv6 mapping
// removed.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
