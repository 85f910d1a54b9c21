package fsp

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

type state uint8

const (
	stateInitiating  state = iota // INIT_CONNECT sent
	stateRequesting               // CONNECT_REQUEST sent
	stateAffirming                // responder: ACK_CONNECT_REQ sent, awaiting the first protected packet
	stateEstablished              // keys installed
	stateClosing                  // RELEASE queued, waiting for its acknowledgement
	stateClosed
)

const (
	overhead       = wire.HeaderLen + fcrypto.TagLen
	maxBatch       = 64
	ackEvery       = 2
	maxAckDelay    = time.Millisecond
	minRTO         = time.Millisecond + maxAckDelay // granularity + ack delay; probes come first (conn_loss.go)
	maxBackoffs    = 10
	maxWindowProbe = 2 * time.Second // the longest interval between window probes
	minPacingDelay = time.Millisecond
	hsInitialRTO   = 250 * time.Millisecond
	hsMaxRTO       = 2 * time.Second
	ackBufferBytes = overhead + 12 + 8*wire.MaxGaps + wire.ResetTokenLen
)

// ptoGranularity is the least margin of a probe timeout over the smoothed
// RTT: what the fine timer (finetimer.go) and a loaded host's scheduling
// add, well below RFC 9002's 1 ms.
const ptoGranularity = 250 * time.Microsecond

type txData struct {
	acked func() // called once the peer acknowledged the entry
	path  *path  // where the latest transmission went
	buf   *[]byte
	n     int
	op    wire.Opcode
	flags uint8
	pn    uint64 // packet number of the latest transmission
	gpn   uint64 // its number for the session's congestion controller (conn_cc.go)
	asked bool   // the latest transmission asked for an immediate acknowledgement
	big   bool   // the latest transmission was larger than BaseDatagramSize (pmtud.go)
	// prevSent is when the transmission before the latest went
	// (spuriousTimeout); zero if there was one only.
	prevSent time.Time
}

type rxData struct {
	buf     *[]byte
	data    []byte
	eot     bool
	release bool
	abort   bool // the peer aborted the message (wire.FlagAbort)
}

// Conn is an FSP connection: a reliable, ordered, encrypted sequence of
// messages in each direction. WriteMessage and ReadMessage may be called
// concurrently with each other, but not each with itself.
//
// Small fields sit together, without padding between them: every pending
// handshake holds a Conn, whose size is most of its cost
// (TestPendingEntrySize). With the allocator's 8-byte header it fits the
// 3,200-byte size class up to 3,192 bytes; the next class is 3,456.
type Conn struct {
	t        *Transport
	cfg      *Config
	log      *slog.Logger
	listener *Listener
	pendKey  pendingKey
	local    uint32 // our ALFID, set by Transport.register
	peer     uint32 // the peer's ALFID

	done        chan struct{} // closed by teardown
	established chan struct{} // closed when the handshake ends either way
	released    chan struct{} // closed when our RELEASE is acknowledged
	peerEnded   chan struct{} // closed when the peer's RELEASE is taken in order
	readable    chan struct{}
	writable    chan struct{}
	events      eventHook // psi.EventSource handler

	inq  inQueue    // datagrams for the connection loop (conn_loop.go)
	pq   *peerQueue // the bytes queued for its peer address; set by register
	rxMu sync.Mutex // serialises opening with rx, which may run outside mu

	// whole holds ReceiveMessage's progress between calls (which must not
	// overlap, as ReadMessage's must not).
	whole wholeRead

	mu        sync.Mutex
	remote    peerAddr
	state     state
	initiator bool
	// tokenOwed: the peer asked for our reset token and the next
	// acknowledgement carries it (conn_reset.go).
	tokenOwed bool
	// hsFailed: the connection closed before its handshake ended; err
	// says why (HandshakeErr).
	hsFailed bool
	err      error

	// Handshake.
	hsKey []byte // tag key of handshake packets
	// resetToken is the peer's reset token for the connection, nil
	// until it sent one (conn_reset.go).
	resetToken *[wire.ResetTokenLen]byte
	nonce      [fcrypto.NonceLen]byte
	peerNonce  []byte
	kp         *fcrypto.KeyPair
	hsPacket   []byte
	cookie     []byte        // initiator: the cookie hsPacket echoes
	hsFlight   *affirmFlight // responder: ACK_CONNECT_REQ (affirm.go)
	hsNext     int           // responder: the next fragment to send
	hsCredit   int           // responder: bytes it may send, 3x those received
	hsFrags    reassembly    // initiator: ACK_CONNECT_REQ; responder: CLIENT_AUTH
	hsFragsIn  int           // initiator: fragments since CONNECT_REQUEST left
	hsTries    int
	hsSentAt   time.Time // the last handshake packet left then
	hsDeadline time.Time
	// reaffirmAt: the responder's earliest resend of ACK_CONNECT_REQ; the
	// initiator's of CONNECT_REQUEST at once on a renewed cookie.
	reaffirmAt time.Time
	confirmed  bool
	authWait   bool
	peerParam  wire.ConnectParam
	peerCerts  []*x509.Certificate // the peer's verified chain; clones inherit it
	// Client authentication: the responder keeps the transcript until a
	// CLIENT_AUTH checks out; the initiator sends authMsg in place of its
	// acknowledgements, and Dial waits (authWait) until the responder
	// confirms it.
	clientDigest []byte
	authMsg      []byte
	// Resumption (resume.go): the ticket a dial presents, the secret
	// this session's tickets derive from, and whether it was resumed.
	// Ticket delivery (ticket_resend.go): the initiator's ticketGot (a
	// NEW_TICKET came), the listener's ticket awaiting acknowledgement.
	resume    *resumeState
	resBase   []byte
	resumed   bool
	ticketGot bool
	ticket    *ticketResend
	// 0-RTT (conn_early.go): the initiator's early state and message
	// (kept until the listener took it or it was queued again), whether
	// the listener said it took it, and whether 0-RTT was accepted. The
	// listener's: whether it holds the first message (earlyIn), and
	// until the initiator confirms what takes it from a copy of RESTORE
	// and what bounds the 0.5-RTT data (earlyResp, conn_halfrtt.go).
	earlyState uint8
	used0RTT   bool
	earlyTaken bool
	earlyIn    bool
	keyGen     uint32 // the generation of the keys below (InstallKey)
	earlyData  []byte
	earlyAcked func()
	earlyResp  *earlyResp

	// Keys. A session's master secret derives the keys of every
	// connection of the session with that connection's ALFID pair.
	master []byte
	tx     *fcrypto.Direction
	rx     [2]*fcrypto.Direction // by key phase
	replay fcrypto.ReplayWindow
	pn     uint64

	// Send side.
	snd       *reliability.Sender[txData]
	sndBytes  int
	sndLimit  int
	peerLimit uint64 // sequence numbers below it fit the peer's window
	// The peer's next expected sequence number and its window, as it
	// last said (jumboLimit).
	peerExp, peerWin uint64
	ccs              ccShare // the session's congestion controller and pacer (conn_cc.go)
	rtt              congestion.RTTStats
	ackRes           reliability.AckResult[txData]
	gapsIn           []reliability.Gap
	sending          bool
	sendAgain        bool
	sendWaited       bool // teardown waits on sendIdle (on mu) for sending to end
	midMessage       bool // a message was begun and not ended
	sendIdle         *sync.Cond
	out              []*[]byte
	outJobs          []sealJob // packets of out still to seal (conn_send.go)
	txFree           []*[]byte // send-queue buffers to free once sealed (freeTx)
	txSpare          []*[]byte // acknowledged send-queue buffers for writeMessage (recycleTx)
	writing          int       // bulk writeMessage calls under way (recycleTx)
	pmtuWait         bool      // a writer waits in pmtuHold: trySend wakes it (pmtuWake)
	unsentWait       bool      // a writer waits in unsentHold: trySend wakes it (unsentWake)
	lossDeferred     bool      // the loss timer's expiry was put off once for input waiting (deferLoss)
	probes           int
	backoff          uint
	ptoCount         uint // probe timeouts since the last acknowledgement progress
	probeBackoff     uint // window probes sent since the window last opened
	paceAt           time.Time
	rtoAt            time.Time
	lossAt           time.Time
	compactAt        time.Time // shrink oversized buffers (conn_mem.go)
	releaseSeq       uint64    // Close is done once everything up to it is acknowledged
	sentRelease      bool      // and it is our RELEASE
	timeWait         bool      // closed after the peer released: acknowledge a while (conn_close.go)
	lastProgress     time.Time // last acknowledgement progress
	collapsedAt      time.Time // a timeout collapsed the window: until the next acknowledgement (spuriousTimeout)

	// Receive side.
	rcv          *reliability.Receiver[rxData]
	rcvCap       int    // receive window in packets: readable plus out-of-order
	rcvMax       int    // the most rcvCap grows to
	readCount    uint64 // packets the reader consumed
	tuneAt       time.Time
	tuneRead     uint64    // readCount at tuneAt
	readQ        []rxData  // in-order packets for ReadMessage, from readHead
	rxSpare      []*[]byte // buffers ReadMessage emptied, for openUnlocked (recycleRx)
	readHead     int
	readOff      int
	ackPending   int
	ackNow       bool
	ackReq       bool // send a KEEP_ALIVE asking for an acknowledgement
	peerReleased bool
	replyWait    atomic.Bool // the reader got the peer's last packet: a reply may carry its acknowledgement (conn_loop.go)
	ackAt        time.Time
	largestAt    time.Time
	advLimit     uint64
	win          *winRepeat // repeats of a window update (conn_winupdate.go); nil until the first
	backlogDrops uint64     // the socket's drops at the last ReadBacklog
	gapsOut      []reliability.Gap
	wgaps        []wire.Gap

	lastRecv    time.Time
	lastKA      time.Time
	quietAt     time.Time // the next quiet probe (conn_quiet.go)
	quietProbes int32
	idleGrace   durMs // how far the idle timeout is put off for our own delays (conn_idle.go)
	timer       *time.Timer
	fineAt      atomic.Int64 // the deadline given to the Transport's fine timer (finetimer.go)
	timerAt     time.Time

	stats    Stats
	ackedFns []func()
	qlog     *tracer // the trace (trace.go); nil when tracing is off

	// Clones (MULTIPLY). A clone shares its parent's master secret; its
	// keys derive from the forking end's new ALFID and the parent's ALFID
	// at the other end. Until the peer's clone answers, a forked clone
	// sends MULTIPLY packets to the parent's peer ALFID.
	parent                     *Conn
	clones                     map[uint32]*Conn // by the peer clone's ALFID; parent side
	usedClones                 map[uint32]bool  // clone ALFIDs ever seen or used: no key reuse, no replays
	forks                      chan *Conn       // clones the peer made, for AcceptFork
	keyInitiator, keyResponder uint32           // the ALFID pair the keys derive from

	// Fork credit (conn_credit.go). The peer's clones of c: made,
	// taken by AcceptFork, and allowed (the credit given, and the value
	// last sent). c's own clones: forked, and allowed by the peer.
	forkMade, forkTaken, forkCredit, creditSent uint64
	forked, peerCredit                          uint64
	forkable                                    chan struct{} // signalled when peerCredit grows
	creditAt                                    time.Time     // a blocked Fork asks for credit again then
	forkWaiters                                 int           // Forks waiting for credit

	// Memory accounting (budget.go): the listener budget this connection
	// is charged to, the peer's share it counts against, its charge, the
	// received packets that charge holds room for, and the jumbo buffers
	// among them it holds room for (conn_jumbo.go).
	bud     *budget
	budPeer netip.Addr
	charged int64
	held    int
	bigHeld int
	// uncount gives back this connection's place in its listener's count
	// of the peer's connections (Config.MaxConnsPerSource), once, at
	// teardown; nil but on a listener's root connections.
	uncount func()

	// Milk class (clones only): every message is one transaction, and a
	// newer complete message supersedes older unacknowledged ones.
	maxPayload int // message bytes per data packet
	// readExtra is what the packets in readQ carry beyond MaxPayload
	// each, and rcvEdge the end of the window advertised furthest
	// (conn_jumbo.go).
	readExtra    int
	rcvEdge      uint64
	milkLive     uint64   // sender: lowest sequence number still delivered (the skip point sent)
	msgStart     uint64   // sender: first sequence number of the message being written
	skipSent     uint64   // sender: the skip point last sent
	newest       uint64   // sender: first sequence number of the newest complete message
	asm          []rxData // receiver: the incomplete message being reassembled
	readMid      bool     // receiver: ReadMessage returned part of the current message
	milk         bool
	peerKnown    bool // the peer's ALFID is known (clones, above)
	acceptsForks bool // AcceptFork was called: grant credit (fork credit, above)
	// rxJumbo: c took a datagram above MaxDatagramSize, and its charge
	// holds a base of jumbo buffers (conn_jumbo.go; beside the other
	// flags: Conn and its 8-byte malloc header fit the 3,200-byte size
	// class, TestPendingEntrySize).
	rxJumbo bool

	// Paths (path.go).
	paths  []*path
	active *path     // the path data is sent on; its address is remote
	latest *path     // the path of the newest authenticated packet
	prev   *path     // the active path before the last move, watched for a fall back
	moved  time.Time // when the last move happened
	resps  []uint64  // PATH_RESPONSEs owed, oldest first
	pmtu   pmtud     // path MTU discovery on the active path (pmtud.go)
	frags  dataFrags // data sequence numbers arriving in fragments (conn_frag.go)
	// rxBig counts the jumbo buffers c's received packets hold
	// (conn_jumbo.go).
	rxBig int
	rxMax int // the largest datagram c takes

	loop loopState // the connection loop's own (conn_loop.go)
}

// Stats are counters of one connection.
type Stats struct {
	PacketsSent     uint64 // protected packets sent, retransmissions included
	PacketsReceived uint64 // protected packets accepted
	// PacketsDropped counts packets that failed authentication or were
	// replayed; they change nothing.
	PacketsDropped uint64
	// PacketsLost counts data packets declared lost, by acknowledgements,
	// the loss timer or a retransmission timeout; Retransmissions counts
	// their resends.
	PacketsLost     uint64
	Retransmissions uint64
	// Probes counts probe timeouts: tail-loss probes sent because no
	// acknowledgement came within the probe timeout.
	Probes uint64
	// WindowUpdates counts window updates repeated because the peer,
	// blocked by the window, sent nothing beyond it after the first
	// (conn_winupdate.go).
	WindowUpdates uint64
	// Duplicates counts data packets received again: each is a spurious
	// retransmission or probe by the peer, or a resend whose first
	// acknowledgement was lost.
	Duplicates uint64
	// SpuriousTimeouts counts retransmission timeouts taken back: a
	// packet presumed lost was acknowledged without a resend, and the
	// congestion window the timeout collapsed was restored.
	SpuriousTimeouts uint64
	// MTUFallbacks counts path MTU black holes confirmed (pmtud.go): the
	// size fell back to BaseDatagramSize.
	MTUFallbacks uint64
	// Milk-class clones only: Superseded counts data packets the sender
	// gave up on because a newer message superseded them, Skipped the
	// sequence numbers the receiver stopped waiting for, Evicted the
	// complete messages dropped unread to make room for newer ones.
	Superseded, Skipped, Evicted uint64
	// AbortsSent counts messages abandoned with AbortMessage, and
	// AbortsReceived the peer's abort markers processed.
	AbortsSent, AbortsReceived uint64
	// BudgetDropped counts data packets a listener's connection dropped
	// unacknowledged because its memory budget had no room for them (the
	// sender retransmits them), and clones whose first packet it so
	// dropped.
	BudgetDropped uint64
	// QueueDropped counts datagrams dropped before processing because
	// the connection's receive queue, or the Transport's bound on all
	// its connections' queues, was full.
	QueueDropped uint64
	// BytesSent and BytesReceived count the protected datagrams'
	// bytes (UDP payload) counted by PacketsSent and PacketsReceived.
	BytesSent, BytesReceived uint64
	SmoothedRTT              time.Duration
	RTTVar                   time.Duration
	MinRTT                   time.Duration
	CongestionWindow         int
	BytesInFlight            int
}

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.QueueDropped = c.queueDropped()
	s.MTUFallbacks = c.pmtu.blackHoles
	// Zero until measured (here or, on a resumption, by the session
	// that issued the ticket), not the timers' guess.
	if _, ok := c.rtt.Estimate(); ok {
		s.SmoothedRTT, s.RTTVar = c.rtt.SmoothedRTT(), c.rtt.RTTVar()
	}
	if c.rtt.HasSample() {
		s.MinRTT = c.rtt.MinRTT()
	}
	if c.snd != nil {
		s.CongestionWindow, _, _ = c.ccState()
		s.BytesInFlight = c.snd.BytesInFlight()
	}
	return s
}

func newConn(t *Transport, cfg *Config, initiator bool, remote peerAddr) *Conn {
	c := &Conn{
		t:           t,
		cfg:         cfg,
		log:         cfg.logger(),
		initiator:   initiator,
		remote:      remote,
		done:        make(chan struct{}),
		established: make(chan struct{}),
		released:    make(chan struct{}),
		peerEnded:   make(chan struct{}),
		readable:    make(chan struct{}, 1),
		writable:    make(chan struct{}, 1),
		forkable:    make(chan struct{}, 1),
		forkCredit:  initialForkCredit,
		peerCredit:  initialForkCredit,
		rcvCap:      min(initialWindow, cfg.recvPackets()),
		rcvMax:      cfg.recvPackets(),
		sndLimit:    cfg.sendBuffer(),
		maxPayload:  basePayload,
	}
	_, udp := t.Conn.(*net.UDPConn)
	c.pmtu.ceil = cfg.maxPathMTU(udp)
	c.rxMax = c.pmtu.ceil
	c.lastRecv = time.Now()
	c.hsDeadline = c.lastRecv.Add(cfg.handshake())
	return c
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr { return c.t.Conn.LocalAddr() }

// RemoteAddr returns the peer's current address, the one data is sent
// to; it follows the peer when it moves, once the new address is
// validated (see Paths).
func (c *Conn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.remote.addr != nil {
		return c.remote.addr
	}
	return net.UDPAddrFromAddrPort(c.remote.ap)
}

// Class returns the connection's traffic class: psi.Milk for milk clones,
// psi.Wine otherwise.
func (c *Conn) Class() psi.TrafficClass {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.milk {
		return psi.Milk
	}
	return psi.Wine
}

// LocalALFID returns the connection's ALFID at this end.
func (c *Conn) LocalALFID() uint32 { return c.local }

// RemoteALFID returns the peer's ALFID.
func (c *Conn) RemoteALFID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}

// PeerCertificates returns the peer's verified certificate chain, leaf
// first: the listener's at the initiator; the client's at the listener
// when it required one (Security.ClientAuth or PSK; nil otherwise).
// Clones, keys installed with InstallKey and sessions resumed from a
// ticket keep it; a 0-RTT dial has it once HandshakeComplete is closed.
func (c *Conn) PeerCertificates() []*x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerCerts
}

// Association returns the association ID the peer sent in CONNECT_PARAM.
func (c *Conn) Association() [16]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerParam.Association
}

// RTT returns the smoothed round-trip time and its variation.
func (c *Conn) RTT() (srtt, rttvar time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt.SmoothedRTT(), c.rtt.RTTVar()
}

// Done is closed when the connection is closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// ---- Application interface ----------------------------------------------

func (c *Conn) stateErr() error {
	if c.err != nil {
		return c.err
	}
	return post.Errorf(post.ErrClosed, "fsp: connection closed")
}

func (c *Conn) wait(ctx context.Context, ch chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
