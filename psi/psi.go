// Package psi defines the interface a protocol stack instance (PSI)
// implements to carry Post Sockets messages: dialing and listening on a
// Path, message-delimited send and receive, forking a new transient to the
// same peer, and reporting the features it supports.
//
// A Transient is one protocol stack instance bound to one Path. The carrier
// package drives transients only through this interface, so FSP, QUIC and
// TCP fit without special cases.
package psi

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Features is a set of capabilities of a stack.
type Features uint32

// Stack features.
const (
	Reliable          Features = 1 << iota // lost data is retransmitted
	Ordered                                // messages arrive in send order
	MessageBoundaries                      // the wire keeps message boundaries
	Fork                                   // new transients to the same peer
	ZeroRTT                                // data in the first flight
	Datagrams                              // unreliable messages
	Encrypted                              // confidentiality and integrity
	Mobility                               // survives an address change
	Multipath                              // several paths at once
	MilkClones                             // forks may drop old data for new
)

var featureNames = []string{"reliable", "ordered", "message-boundaries", "fork",
	"0-rtt", "datagrams", "encrypted", "mobility", "multipath", "milk-clones"}

// Has reports whether f includes all of g.
func (f Features) Has(g Features) bool { return f&g == g }

func (f Features) String() string {
	var parts []string
	for i, n := range featureNames {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, "|")
}

// ParseFeature returns the feature with the given name.
func ParseFeature(name string) (Features, bool) {
	for i, n := range featureNames {
		if n == name {
			return 1 << i, true
		}
	}
	return 0, false
}

// TrafficClass says which data a transient keeps when a buffer overflows.
type TrafficClass uint8

const (
	// Wine: older data first, everything delivered reliably.
	Wine TrafficClass = iota
	// Milk: the newest data wins; older data may be dropped and is not
	// retransmitted once newer data supersedes it.
	Milk
)

func (c TrafficClass) String() string {
	if c == Milk {
		return "milk"
	}
	return "wine"
}

// Config is shared by Dial and Listen. The zero value is usable: defaults
// are filled in by the stack.
type Config struct {
	Security Security
	// MaxMessageSize bounds one inbound message held by a stack that must
	// frame messages itself. Zero means DefaultMaxMessageSize.
	MaxMessageSize int64
	// HandshakeTimeout bounds Dial; zero means 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a transient with no traffic; zero means 30 s.
	IdleTimeout time.Duration
	// KeepAlive is the keep-alive interval; zero lets the stack choose.
	KeepAlive time.Duration
	// Local is the address to dial from; zero lets the system choose.
	Local netip.AddrPort
	// Allow0RTT lets the first message travel as 0-RTT data when the stack
	// holds resumption state. Only idempotent messages should use it.
	Allow0RTT bool
	// Association identifies the Association a transient belongs to, so
	// the peer can group forks of one Carrier.
	Association [16]byte
	Logger      *slog.Logger
}

// DefaultMaxMessageSize is the default bound on one inbound message.
const DefaultMaxMessageSize = 16 << 20

// Limit returns the effective message limit.
func (c *Config) Limit() int64 {
	if c == nil || c.MaxMessageSize <= 0 {
		return DefaultMaxMessageSize
	}
	return c.MaxMessageSize
}

// Log returns the configured logger or a discarding one.
func (c *Config) Log() *slog.Logger {
	if c == nil || c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Handshake returns the handshake timeout.
func (c *Config) Handshake() time.Duration {
	if c == nil || c.HandshakeTimeout <= 0 {
		return 10 * time.Second
	}
	return c.HandshakeTimeout
}

// Idle returns the idle timeout.
func (c *Config) Idle() time.Duration {
	if c == nil || c.IdleTimeout <= 0 {
		return 30 * time.Second
	}
	return c.IdleTimeout
}

// Stack is a protocol stack that can make Transients.
type Stack interface {
	// Name is a short lower-case name such as "fsp", "quic" or "tcp".
	Name() string
	Features() Features
	// Dial opens a transient to remote and completes its handshake.
	Dial(ctx context.Context, remote netip.AddrPort, cfg *Config) (Transient, error)
	// Listen accepts transients on local.
	Listen(ctx context.Context, local netip.AddrPort, cfg *Config) (Listener, error)
}

// Listener accepts root transients. Forks of an existing transient are
// delivered through that transient's AcceptFork instead.
type Listener interface {
	Accept(ctx context.Context) (Transient, error)
	Addr() netip.AddrPort
	Close() error
}

// WriteOptions accompany the final part of an outbound message.
type WriteOptions struct {
	Properties *post.Properties
	// Acked, if set, is called once the peer has acknowledged the whole
	// message. Stacks that cannot tell never call it.
	Acked func()
	// More says that more messages follow at once: a stack that
	// implements Flusher may hold this one back to send them together,
	// until a write without More or a Flush.
	More bool
}

// Flusher is implemented by stacks that may hold back messages written
// with WriteOptions.More; Flush sends them.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Transient is one protocol stack instance on one Path. Its methods may be
// called from different goroutines, but WriteMessage calls must not overlap
// each other, nor ReadMessage calls each other.
type Transient interface {
	Stack() string
	Features() Features
	// WriteMessage appends p to the current outbound message; end completes
	// the message. It blocks while flow control forbids sending.
	WriteMessage(ctx context.Context, p []byte, end bool, opts *WriteOptions) error
	// ReadMessage reads from the current inbound message into p. end is
	// true when the returned bytes complete the message.
	ReadMessage(ctx context.Context, p []byte) (n int, end bool, err error)
	// Fork opens a new transient to the same peer.
	Fork(ctx context.Context, class TrafficClass) (Transient, error)
	// AcceptFork returns the next transient the peer forked from this one.
	AcceptFork(ctx context.Context) (Transient, error)
	// Path is the path currently in use; Paths lists all known paths.
	Path() post.Path
	Paths() []post.Path
	// Association is the Association ID the peer sent or that was dialled.
	Association() [16]byte
	// Close flushes pending data and closes in an orderly way.
	Close() error
}

// Networker is implemented by stacks to say which IP protocol they run
// over ("udp" or "tcp"), so racing can interleave them. Stacks that do not
// implement it are taken to run over UDP.
type Networker interface {
	Network() string
}

// StackNetwork returns the IP protocol a stack runs over.
func StackNetwork(s Stack) string {
	if n, ok := s.(Networker); ok {
		return n.Network()
	}
	return "udp"
}

// PacketSharer is implemented by stacks that can share their UDP socket
// with another stack. ListenShared listens like Listen and also returns
// the datagrams that are not the stack's own as a net.PacketConn whose
// writes leave from the same socket. It stays usable until the listener
// closes.
type PacketSharer interface {
	ListenShared(ctx context.Context, local netip.AddrPort, cfg *Config) (Listener, net.PacketConn, error)
}

// PacketListener is implemented by stacks that can listen on a
// caller-supplied net.PacketConn, such as the one a PacketSharer returns.
// The listener and the transients it accepted hold pc; the last of them
// to close closes it.
type PacketListener interface {
	ListenPacket(ctx context.Context, pc net.PacketConn, cfg *Config) (Listener, error)
}
