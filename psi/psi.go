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
	"fmt"
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
	// Plaintext marks a stack that sends in the clear (psi/raw's plain
	// TCP): a policy selects it only if it opts in (policy.SelectStacks).
	Plaintext
)

var featureNames = []string{"reliable", "ordered", "message-boundaries", "fork",
	"0-rtt", "datagrams", "encrypted", "mobility", "multipath", "milk-clones", "plaintext"}

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
	switch c {
	case Wine:
		return "wine"
	case Milk:
		return "milk"
	}
	return fmt.Sprintf("TrafficClass(%d)", uint8(c))
}

// Config is shared by Dial and Listen. The zero value is usable: defaults
// are filled in by the stack.
type Config struct {
	Security Security
	// MaxMessageSize bounds what a receiver holds of one inbound message
	// at once: a whole message read with a single buffer, a datagram. A
	// message larger than it still streams through ReadMessage in parts
	// on every stack. Zero means DefaultMaxMessageSize.
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
	// Disabled lists optional features the policy prohibits: the stack
	// switches them off rather than merely not asking for them. Datagrams:
	// none are sent or accepted. Fork: Fork fails with an error wrapping
	// post.ErrPolicyConflict and the peer's forks are refused. ZeroRTT:
	// as Allow0RTT false.
	Disabled Features
	// Association identifies the Association a transient belongs to, so
	// the peer can group forks of one Carrier.
	Association [16]byte
	// Linger bounds how long Close waits for the peer to confirm that it
	// has everything sent; zero means DefaultLinger. CloseContext takes
	// its bound from its context instead.
	Linger time.Duration
	Logger *slog.Logger
	// TraceDir, if set, makes every transient write a trace of its
	// connection, one file per connection named by stack, role and
	// connection ID (qlog JSON-SEQ; see docs/tracing.md). Empty means the
	// POSTSOCKETS_QLOGDIR environment variable; no trace if that is empty.
	TraceDir string
	// Events asks for connection-level events (psi.EventSource) where
	// watching costs something: QUIC then follows quic-go's qlog events
	// (an allocation or two per packet). FSP and TCP report events
	// regardless.
	Events bool
}

// DefaultLinger is the default bound on Close.
const DefaultLinger = 3 * time.Second

// LingerTime returns the effective Linger.
func (c *Config) LingerTime() time.Duration {
	if c == nil || c.Linger <= 0 {
		return DefaultLinger
	}
	return c.Linger
}

// DefaultMaxMessageSize is the default bound on what a receiver holds of
// one inbound message at once.
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
//
// Every stack keeps the delivery and close contract of docs/design.md
// ("Delivery and close contract"); psi/psitest checks it. In short: a
// message arrives whole, in order, or the reader gets an error for it;
// nothing is lost while the calls that sent it return nil; Close returns
// nil only once the peer's stack has everything; nothing hangs.
type Transient interface {
	Stack() string
	Features() Features
	// WriteMessage appends p to the current outbound message; end completes
	// the message. It blocks while flow control forbids sending, until ctx
	// ends. A nil return means the stack holds p and will deliver it unless
	// the transient fails, which Close then reports. A part written with
	// end false is sent without waiting for the end. After an error the
	// message is incomplete: the reader never sees it as complete.
	WriteMessage(ctx context.Context, p []byte, end bool, opts *WriteOptions) error
	// ReadMessage reads from the current inbound message into p. end is
	// true when the returned bytes complete the message. An empty part
	// carries the end only if the writer wrote the end alone after the
	// message's data had been sent. A message of any length
	// streams through in parts; MaxMessageSize does not bound it here.
	// After the peer's orderly close, and once everything was read, it
	// returns io.EOF. A message the peer aborted, or cut by the peer's
	// Abort, gives an error wrapping post.ErrReset.
	ReadMessage(ctx context.Context, p []byte) (n int, end bool, err error)
	// Fork opens a new transient to the same peer. A fork the peer cannot
	// take yet is held back by flow control or fails here or at its first
	// WriteMessage; it is never dropped silently.
	Fork(ctx context.Context, class TrafficClass) (Transient, error)
	// AcceptFork returns the next transient the peer forked from this one.
	// Once the peer closed this one in order and no fork is queued, it
	// fails with an error wrapping post.ErrClosed, without this transient
	// being read (TCP outside Linux: only once it is read).
	AcceptFork(ctx context.Context) (Transient, error)
	// Path is the path currently in use; Paths lists all known paths.
	Path() post.Path
	Paths() []post.Path
	// Association is the Association ID the peer sent or that was dialled.
	Association() [16]byte
	// Close ends the transient in order: it sends what is pending, then
	// waits, at most Config.Linger, until the peer's stack confirms it
	// has everything. It returns nil only then; otherwise it aborts the
	// transient and returns an error (wrapping post.ErrTimeout if the
	// linger ran out). Blocked calls return post.ErrClosed at once;
	// unread inbound data is discarded.
	Close() error
}

// ContextCloser is implemented by transients whose Close can be bounded
// by a context instead of Config.Linger. Every stack in this module
// implements it; use CloseContext to call it.
type ContextCloser interface {
	// CloseContext is Close, waiting for the peer at most until ctx ends.
	CloseContext(ctx context.Context) error
}

// Aborter is implemented by transients that can end at once. Every stack
// in this module implements it; use Abort to call it.
type Aborter interface {
	// Abort ends the transient at once and tells the peer, whose pending
	// and later calls fail with an error wrapping post.ErrReset. Data not
	// yet delivered is dropped. Blocked local calls return an error
	// wrapping post.ErrClosed (and err, if not nil). Abort after Close or
	// Abort does nothing.
	Abort(err error)
}

// BacklogReporter is implemented by transients that tell whether data
// from the peer is on our side and no read took it yet: FSP (its read
// queue and socket, packets held beyond a loss, datagrams its socket
// dropped for want of room) and TCP on Linux (the kernel's receive
// queue). A reader that finds its peer slow can tell so whether the
// peer or its own side (a starved reader, a loss being repaired) is.
type BacklogReporter interface {
	// ReadBacklog reports whether bytes wait that a read would return
	// once our side processed them (ready), and whether the peer's bytes
	// are delayed by a loss being repaired: held beyond it, or dropped
	// by our own full buffer since the last call (held).
	ReadBacklog() (ready, held bool)
}

// MessageAborter is implemented by transients that can abandon the
// outbound message in progress. Every stack in this module implements
// it; use AbortMessage to call it.
type MessageAborter interface {
	// AbortMessage abandons the message being written, so that the
	// peer's ReadMessage returns an error wrapping post.ErrReset for it
	// instead of completing it. With no message in progress it does
	// nothing. It returns nil if the transient goes on carrying the next
	// messages; otherwise it aborted the whole transient (as Abort) and
	// returns an error saying so.
	AbortMessage(ctx context.Context) error
}

// CloseContext closes t, waiting for the peer at most until ctx ends. A
// transient that does not implement ContextCloser is closed with Close.
func CloseContext(ctx context.Context, t Transient) error {
	if c, ok := t.(ContextCloser); ok {
		return c.CloseContext(ctx)
	}
	return t.Close()
}

// Abort ends t at once, telling the peer. A transient that does not
// implement Aborter is closed with Close, in the background.
func Abort(t Transient, err error) {
	if a, ok := t.(Aborter); ok {
		a.Abort(err)
		return
	}
	go t.Close()
}

// AbortMessage abandons the outbound message in progress on t. A
// transient that does not implement MessageAborter is aborted whole, and
// the error says so.
func AbortMessage(ctx context.Context, t Transient) error {
	if a, ok := t.(MessageAborter); ok {
		return a.AbortMessage(ctx)
	}
	err := post.Errorf(post.ErrReset, "message aborted: %s transient aborted", t.Stack())
	Abort(t, err)
	return err
}

// ZeroRTTReporter is implemented by transients that can carry their
// first message as 0-RTT data (FSP and QUIC).
type ZeroRTTReporter interface {
	// Used0RTT reports whether the listener accepted 0-RTT data on the
	// connection: the first message then went (initiator) or came
	// (listener) as 0-RTT data, unless it was written after the
	// handshake ended or its 0-RTT copy was lost and sent again. It is
	// final once HandshakeComplete is closed.
	Used0RTT() bool
	// HandshakeComplete is closed when the handshake ends either way.
	HandshakeComplete() <-chan struct{}
	// HandshakeErr is why the handshake failed, once HandshakeComplete
	// is closed; nil while it runs and once it completed. A transient
	// Dial returned before its handshake (0-RTT) whose handshake failed
	// delivered nothing that was written to it.
	HandshakeErr() error
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

// PacketDialer is implemented by datagram stacks that can dial over a
// caller-supplied net.PacketConn connected to one peer, such as the pair
// ICE selected or an emulated link. remote is the peer's address as pc
// reports it. The transient and its forks hold pc; the last of them to
// close closes it. If DialPacket fails, pc is closed.
type PacketDialer interface {
	DialPacket(ctx context.Context, pc net.PacketConn, remote net.Addr, cfg *Config) (Transient, error)
}
