package fsp

import (
	"log/slog"
	"time"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Packet sizes.
const (
	// MaxDatagramSize is the largest datagram of a standard Ethernet
	// path (a 1,500-byte MTU over IPv6): path MTU discovery tries it
	// before any larger size, and it is the most it looks for on a
	// net.PacketConn that is not a UDP socket (Config.MaxPathMTU).
	MaxDatagramSize = 1452
	// JumboDatagramSize is the largest datagram path MTU discovery
	// looks for by default on a UDP socket: the UDP payload of a
	// 9,000-byte (jumbo) MTU over IPv4. The local interface's MTU bounds
	// it further: the kernel refuses larger probes at once.
	JumboDatagramSize = 8972
	// LargestDatagramSize is the most Config.MaxPathMTU may be: the
	// largest datagram FSP sends or takes.
	LargestDatagramSize = 9216
	// MaxPayload is the most message bytes a data packet of
	// MaxDatagramSize carries.
	MaxPayload = MaxDatagramSize - wire.HeaderLen - crypto.TagLen
	// maxJumboPayload is the most message bytes a data packet of
	// LargestDatagramSize carries.
	maxJumboPayload = LargestDatagramSize - wire.HeaderLen - crypto.TagLen
	// basePayload is the most message bytes a data packet carries at the
	// base PLPMTU (RFC 8899), BaseDatagramSize, where every connection
	// starts: no path of at least 1,280 bytes needs IP fragmentation or
	// can blackhole its packets. Path MTU discovery (pmtud.go) adds what
	// the path carries beyond it.
	basePayload = BaseDatagramSize - wire.HeaderLen - crypto.TagLen
	// BaseDatagramSize is the largest handshake datagram: a UDP payload
	// that fits the 1,280-byte IPv6 minimum MTU (1280 - 40 - 8).
	BaseDatagramSize = 1232
	// maxHandshakeSize bounds the datagrams FSP reads before a
	// connection is set up (RESTORE with its ticket).
	maxHandshakeSize = 4096
	// maxFlightSize bounds a handshake flight (a certificate chain and
	// signature), sent in fragments of at most BaseDatagramSize.
	maxFlightSize = 16384
)

// Config configures Dial and Listen. The zero value is usable.
type Config struct {
	// Security holds certificates, pins, a PSK and verification options.
	// A listener needs certificates or a PSK: without them Listen fails
	// with an error wrapping post.ErrAuthentication.
	Security psi.Security
	// MaxMessageSize bounds a message read with ReceiveMessage; zero
	// means psi.DefaultMaxMessageSize.
	MaxMessageSize int64
	// IdleTimeout closes a connection that has heard nothing from its peer
	// for this long, with an error wrapping post.ErrTimeout; zero means
	// 30 s. With keep-alives on it is the peer-dead timeout. It judges the
	// peer's silence, not ours: time our timer fired late, and datagrams
	// waiting unread in our socket, put it off, up to twice IdleTimeout in
	// all (conn_idle.go).
	IdleTimeout time.Duration
	// KeepAlive is the KEEP_ALIVE interval while idle; zero means a third
	// of IdleTimeout (at least 500 ms), negative disables keep-alives.
	KeepAlive time.Duration
	// HandshakeTimeout bounds connection setup; zero means 10 s.
	HandshakeTimeout time.Duration
	// ReceiveWindow is the largest receive buffer of a connection, in
	// bytes, advertised to the peer as a window of packets; zero means
	// 4 MiB. A window starts at about 135 KiB (22 KiB for a clone) and
	// doubles, up to this, while the reader consumes half of it within
	// about two round trips (auto-tuning to the bandwidth-delay
	// product), so a connection that is not read holds little.
	ReceiveWindow int
	// MaxUnacceptedForks bounds the clones the peer forked that
	// AcceptFork has not returned yet, per connection; zero means 64, and
	// less than 4 counts as 4. The peer's Fork waits for room (fork
	// credit) rather than overflow it, so no clone is ever refused.
	MaxUnacceptedForks int
	// MemoryBudget bounds, for a listener, the memory its peers may make
	// all its connections and clones hold: their fixed state and the
	// packets they buffer; zero means 256 MiB. One peer address may take
	// a quarter of it, and one /24 (IPv4) or /48 (IPv6) prefix half. A
	// connection or clone takes about 22.5 KiB when it is made (its fixed
	// state and a base window of 4 packets), so the default holds about
	// 11,650 idle connections, 2,912 from one address (MaxConnsPerSource
	// stops one at 1,024 by default); received packets past the base
	// window are charged as they arrive. Past the budget
	// new connections are refused (the dialer gets an error wrapping
	// post.ErrRefused) and data packets past the base window are dropped
	// unacknowledged, for the sender to retransmit; data acknowledged is
	// never dropped. Listener.Stats reports the accounting. Dialing
	// ignores it.
	MemoryBudget int64
	// SendBuffer bounds the bytes written but not yet acknowledged; zero
	// means 8 MiB. While packets are in flight a writer waits sooner,
	// once 128 packets wait to be sent; with nothing in flight (the
	// peer's window closed) it may fill the whole buffer.
	SendBuffer int
	// Linger bounds how long Close waits for the peer to acknowledge
	// everything sent; zero means psi.DefaultLinger (3 s). CloseContext
	// takes its bound from its context instead.
	Linger time.Duration
	// Congestion names the congestion controller: "cubic" (default) or
	// "newreno".
	Congestion string
	// DisablePacing turns the pacer off.
	DisablePacing bool
	// DisablePathMTUDiscovery keeps every datagram within
	// BaseDatagramSize: no probing for a larger path MTU (doc.go, "Path
	// MTU").
	DisablePathMTUDiscovery bool
	// MaxPathMTU is the largest datagram (UDP payload) path MTU
	// discovery looks for, and the largest a connection takes from its
	// peer; zero means JumboDatagramSize on a UDP socket, where the
	// local interface's MTU bounds the search (1,472 on Ethernet over
	// IPv4, 8,972 on a 9,000-byte MTU or on loopback), and
	// MaxDatagramSize on any other net.PacketConn. It is clamped to
	// [MaxDatagramSize, LargestDatagramSize]. Handshakes keep to
	// BaseDatagramSize whatever it is. A received datagram above
	// MaxDatagramSize is taken only once authenticated, on an
	// established connection. A listener charges each packet a connection
	// buffers to MemoryBudget by the buffer it holds: about 9.6 KB for a
	// jumbo datagram's, 1.7 KB for another's; the first jumbo datagram
	// charges room for four of them, held until the close, and without
	// that room it is dropped, and the peer's search stops below.
	MaxPathMTU int
	// Association is sent to the peer in CONNECT_PARAM.
	Association [16]byte
	// Allow0RTT lets a dial holding a resumption ticket send RESTORE and
	// return at once, and send its first message, if written before the
	// handshake ends, as 0-RTT data in a copy of RESTORE (it must be
	// idempotent: a replay outside the anti-replay window is refused, but
	// see doc.go), and lets a listener take such messages.
	Allow0RTT bool
	// NoForks refuses clones: Fork fails with post.ErrPolicyConflict and
	// the peer's clones are reset with reason refused, so its calls on
	// one fail with an error wrapping post.ErrRefused.
	NoForks bool
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// TraceDir, if set, makes every established connection write a qlog
	// trace, fsp_<client|server>_<ALFID>.sqlog, to this directory (see
	// docs/tracing.md). Empty means the POSTSOCKETS_QLOGDIR environment
	// variable; no trace if that is empty too.
	TraceDir string

	// A listener holds a handshake between its ACK_CONNECT_REQ and the
	// client's first protected packet. MaxPendingPerAddress and
	// MaxPendingPerPrefix bound those it holds for one source IP address
	// and for one /24 (IPv4) or /48 (IPv6) prefix, MaxPending all of
	// them; zero means 32, 128 and 4096. Past a bound the oldest of that
	// address, prefix or (for MaxPending) largest prefix is forgotten if
	// older than a second, else the new request is dropped; clients
	// retransmit, and nobody is refused.
	MaxPending, MaxPendingPerAddress, MaxPendingPerPrefix int
	// MaxHandshakeRate bounds the key exchanges a listener runs a second
	// for one such prefix, and a quarter of it for one address, while 8
	// or more handshakes are pending; zero means 100. Past either, the
	// prefix's CONNECT_REQUESTs are dropped, and their clients retransmit.
	MaxHandshakeRate int
	// MaxConnsPerSource bounds the connections one source (an IPv4
	// address or an IPv6 /64) holds on a listener, as psi/quic and
	// psi/tcp bound theirs: from the CONNECT_REQUEST (or RESTORE) that
	// starts its key exchange until it closes, pending, waiting for
	// Accept or accepted; zero means 1024. Past it a new connection is
	// refused at once (the dialer gets an error wrapping
	// post.ErrRefused). Clones do not count: fork credit and the memory
	// budget bound them, as MaxStreams bounds a QUIC connection's
	// streams. Dialing ignores it.
	MaxConnsPerSource int

	// forkAnnounce is how long a fresh clone waits for data before it
	// announces itself with an empty MULTIPLY; zero means forkAnnounce.
	forkAnnounce time.Duration
}

// forkAnnounce is the default delay before a clone with nothing to send
// announces itself.
const forkAnnounce = 5 * time.Millisecond

func (c *Config) announceDelay() time.Duration {
	if c.forkAnnounce > 0 {
		return c.forkAnnounce
	}
	return forkAnnounce
}

func (c *Config) clone() *Config {
	if c == nil {
		return &Config{}
	}
	cc := *c
	return &cc
}

func (c *Config) idle() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return 30 * time.Second
}

func (c *Config) keepAlive() time.Duration {
	switch {
	case c.KeepAlive < 0:
		return 0
	case c.KeepAlive > 0:
		return max(c.KeepAlive, 10*time.Millisecond)
	}
	return max(c.idle()/3, 500*time.Millisecond)
}

func (c *Config) linger() time.Duration {
	if c.Linger > 0 {
		return c.Linger
	}
	return psi.DefaultLinger
}

func (c *Config) handshake() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return 10 * time.Second
}

func (c *Config) recvPackets() int {
	w := c.ReceiveWindow
	if w <= 0 {
		w = 4 << 20
	}
	return min(max(w/MaxPayload, 16), wire.MaxWindow)
}

// maxPathMTU is the ceiling of path MTU discovery and the largest
// datagram taken, on a UDP socket (udp) or another net.PacketConn.
func (c *Config) maxPathMTU(udp bool) int {
	switch {
	case c.MaxPathMTU > 0:
		return min(max(c.MaxPathMTU, MaxDatagramSize), LargestDatagramSize)
	case udp:
		return JumboDatagramSize
	}
	return MaxDatagramSize
}

func (c *Config) maxForks() int {
	if c.MaxUnacceptedForks > 0 {
		return max(c.MaxUnacceptedForks, initialForkCredit)
	}
	return 64
}

func (c *Config) memoryBudget() int64 {
	if c.MemoryBudget > 0 {
		return c.MemoryBudget
	}
	return 256 << 20
}

func (c *Config) sendBuffer() int {
	if c.SendBuffer > 0 {
		return max(c.SendBuffer, MaxPayload)
	}
	return 8 << 20
}

func (c *Config) maxMessage() int64 {
	if c.MaxMessageSize > 0 {
		return c.MaxMessageSize
	}
	return psi.DefaultMaxMessageSize
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Config) pendingQuotas() (perAddr, perPrefix, total int) {
	perAddr, perPrefix, total = defaultMaxPendingPerAddr, defaultMaxPendingPerPrefix, defaultMaxPending
	if c.MaxPendingPerAddress > 0 {
		perAddr = c.MaxPendingPerAddress
	}
	if c.MaxPendingPerPrefix > 0 {
		perPrefix = c.MaxPendingPerPrefix
	}
	if c.MaxPending > 0 {
		total = c.MaxPending
	}
	return perAddr, perPrefix, total
}

func (c *Config) maxConnsPerSource() int {
	if c.MaxConnsPerSource > 0 {
		return c.MaxConnsPerSource
	}
	return defaultMaxConnsPerSource
}

// defaultMaxConnsPerSource is psi/quic's and psi/tcp's default.
const defaultMaxConnsPerSource = 1024

func (c *Config) handshakeRate() int {
	if c.MaxHandshakeRate > 0 {
		return c.MaxHandshakeRate
	}
	return defaultHandshakeRate
}
