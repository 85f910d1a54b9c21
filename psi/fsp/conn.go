package fsp

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
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
	minRTO         = 50 * time.Millisecond
	maxBackoffs    = 10
	minPacingDelay = time.Millisecond
	closePoll      = 250 * time.Millisecond
	closeStall     = 3 * time.Second // Close gives up after this long without acknowledgements
	closeBackoffs  = 5               // and this many unanswered retransmission timeouts
	hsInitialRTO   = 250 * time.Millisecond
	hsMaxRTO       = 2 * time.Second
	ackBufferBytes = overhead + 12 + 8*wire.MaxGaps
)

type txData struct {
	acked func() // called once the peer acknowledged the entry
	path  *path  // where the latest transmission went
	buf   *[]byte
	n     int
	op    wire.Opcode
	flags uint8
	pn    uint64 // packet number of the latest transmission
}

type rxData struct {
	buf     *[]byte
	data    []byte
	eot     bool
	release bool
}

// Conn is an FSP connection: a reliable, ordered, encrypted sequence of
// messages in each direction. WriteMessage and ReadMessage may be called
// concurrently with each other, but not each with itself.
type Conn struct {
	t         *Transport
	cfg       *Config
	log       *slog.Logger
	initiator bool
	listener  *Listener
	pendKey   pendingKey
	local     uint32 // our ALFID, set by Transport.register
	peer      uint32 // the peer's ALFID

	done        chan struct{} // closed by teardown
	established chan struct{} // closed when the handshake ends either way
	released    chan struct{} // closed when our RELEASE is acknowledged
	readable    chan struct{}
	writable    chan struct{}

	mu     sync.Mutex
	remote peerAddr
	state  state
	err    error

	// Handshake.
	hsKey      []byte // tag key of handshake packets
	resetKey   []byte // tag key of unauthenticated RESETs sent to us
	nonce      [fcrypto.NonceLen]byte
	peerNonce  []byte
	kp         *fcrypto.KeyPair
	hsPacket   []byte
	hsTries    int
	hsDeadline time.Time
	confirmed  bool
	peerParam  wire.ConnectParam
	peerCerts  []*x509.Certificate

	// Keys. A session's master secret derives the keys of every
	// connection of the session with that connection's ALFID pair.
	master []byte
	keyGen uint32
	tx     *fcrypto.Direction
	rx     [2]*fcrypto.Direction // by key phase
	replay fcrypto.ReplayWindow
	pn     uint64

	// Send side.
	snd          *reliability.Sender[txData]
	sndBytes     int
	sndLimit     int
	peerLimit    uint64 // sequence numbers below it fit the peer's window
	cc           congestion.Controller
	rtt          congestion.RTTStats
	pacer        *congestion.Pacer
	ackRes       reliability.AckResult[txData]
	gapsIn       []reliability.Gap
	sending      bool
	sendAgain    bool
	out          []*[]byte
	probes       int
	backoff      uint
	paceAt       time.Time
	rtoAt        time.Time
	lossAt       time.Time
	releaseSeq   uint64
	lastProgress time.Time // last acknowledgement progress

	// Receive side.
	rcv          *reliability.Receiver[rxData]
	rcvCap       int
	readQ        []rxData // in-order packets for ReadMessage, from readHead
	readHead     int
	readOff      int
	peerReleased bool
	ackPending   int
	ackNow       bool
	ackReq       bool // send a KEEP_ALIVE asking for an acknowledgement
	ackAt        time.Time
	largestAt    time.Time
	advLimit     uint64
	gapsOut      []reliability.Gap
	wgaps        []wire.Gap

	lastRecv time.Time
	lastKA   time.Time
	timer    *time.Timer
	timerAt  time.Time

	stats    Stats
	ackedFns []func()

	// Clones (MULTIPLY). A clone shares its parent's master secret; its
	// keys derive from the forking end's new ALFID and the parent's ALFID
	// at the other end. Until the peer's clone answers, a forked clone
	// sends MULTIPLY packets to the parent's peer ALFID.
	parent                     *Conn
	peerKnown                  bool             // the peer's ALFID is known
	clones                     map[uint32]*Conn // by the peer clone's ALFID; parent side
	usedClones                 map[uint32]bool  // clone ALFIDs ever seen or used: no key reuse, no replays
	forks                      chan *Conn       // clones the peer made, for AcceptFork
	keyInitiator, keyResponder uint32           // the ALFID pair the keys derive from
	dirty                      bool             // queued for flush by the read loop (read loop only)

	// Milk class (clones only): every message is one transaction, and a
	// newer complete message supersedes older unacknowledged ones.
	milk       bool
	maxPayload int      // message bytes per data packet
	milkLive   uint64   // sender: lowest sequence number still delivered (the skip point sent)
	msgStart   uint64   // sender: first sequence number of the message being written
	skipSent   uint64   // sender: the skip point last sent
	newest     uint64   // sender: first sequence number of the newest complete message
	asm        []rxData // receiver: the incomplete message being reassembled
	readMid    bool     // receiver: ReadMessage returned part of the current message

	// Paths (path.go).
	paths     []*path
	active    *path // the path data is sent on; its address is remote
	latest    *path // the path of the newest authenticated packet
	respNonce uint64
	hasResp   bool // a PATH_RESPONSE is owed
}

// Stats are counters of one connection.
type Stats struct {
	PacketsSent     uint64 // protected packets sent, retransmissions included
	PacketsReceived uint64 // protected packets accepted
	// PacketsDropped counts packets that failed authentication or were
	// replayed; they change nothing.
	PacketsDropped  uint64
	Retransmissions uint64
	// Milk-class clones only: Superseded counts data packets the sender
	// gave up on because a newer message superseded them, Skipped the
	// sequence numbers the receiver stopped waiting for, Evicted the
	// complete messages dropped unread to make room for newer ones.
	Superseded, Skipped, Evicted uint64
	SmoothedRTT                  time.Duration
	RTTVar                       time.Duration
	CongestionWindow             int
	BytesInFlight                int
}

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.SmoothedRTT, s.RTTVar = c.rtt.SmoothedRTT(), c.rtt.RTTVar()
	if c.cc != nil {
		s.CongestionWindow, s.BytesInFlight = c.cc.Window(), c.snd.BytesInFlight()
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
		readable:    make(chan struct{}, 1),
		writable:    make(chan struct{}, 1),
		rcvCap:      cfg.recvPackets(),
		sndLimit:    cfg.sendBuffer(),
		maxPayload:  MaxPayload,
	}
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

// PeerCertificates returns the certificate chain the server presented;
// nil on the server side.
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

// ---- Handshake ----------------------------------------------------------

func (c *Conn) myParam() wire.ConnectParam {
	return wire.ConnectParam{Window: uint32(c.rcvCap), Association: c.cfg.Association}
}

func (c *Conn) dial(ctx context.Context) error {
	kp, err := fcrypto.NewKeyPair()
	if err != nil {
		return err
	}
	rand.Read(c.nonce[:])
	c.mu.Lock()
	c.kp = kp
	psk := c.cfg.Security.PSK
	c.hsKey = fcrypto.HandshakeKey(psk, c.local)
	c.resetKey = c.hsKey
	p := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: c.local}}
	c.hsPacket = handshakePacket(nil, c.hsKey, &p, c.nonce[:])
	c.state = stateInitiating
	c.sendHandshake(time.Now())
	c.armTimer()
	c.mu.Unlock()

	select {
	case <-c.established:
	case <-ctx.Done():
		c.teardown(ctx.Err(), false)
		return ctx.Err()
	}
	c.mu.Lock()
	err = c.err
	c.mu.Unlock()
	return err
}

func (c *Conn) sendHandshake(now time.Time) {
	if err := c.t.write(c.hsPacket, &c.remote); err != nil && errors.Is(err, syscall.ECONNREFUSED) && c.t.recvErr.Load() {
		c.failLocked(post.Errorf(post.ErrRefused, "fsp: port unreachable"))
		return
	}
	c.rtoAt = now.Add(min(hsInitialRTO<<c.hsTries, hsMaxRTO))
	c.hsTries++
}

// onHandshakeReply handles ACK_INIT_CONNECT and ACK_CONNECT_REQ at the
// initiator, and refusals while connecting. Called with c.mu held.
func (c *Conn) onHandshakeReply(b []byte, pkt *wire.Packet) {
	if c.hsKey == nil {
		return
	}
	if _, ok := fcrypto.VerifyHandshakeTag(c.hsKey, b); !ok || len(pkt.Payload) < fcrypto.TagLen {
		return
	}
	body := pkt.Payload[:len(pkt.Payload)-fcrypto.TagLen]
	now := time.Now()
	switch {
	case pkt.Opcode == wire.AckInitConnect && c.state == stateInitiating:
		if len(body) != fcrypto.CookieLen {
			return
		}
		p := wire.Packet{
			Header:       wire.Header{Opcode: wire.ConnectRequest, Src: c.local},
			HasParam:     true,
			Param:        c.myParam(),
			EphemeralKey: c.kp.Public[:],
		}
		payload := append(append(make([]byte, 0, fcrypto.CookieLen+fcrypto.NonceLen), body...), c.nonce[:]...)
		c.hsPacket = handshakePacket(nil, c.hsKey, &p, payload)
		c.state = stateRequesting
		c.hsTries = 0
		c.sendHandshake(now)
	case pkt.Opcode == wire.AckConnectReq && c.state == stateRequesting:
		if err := c.finishDial(pkt, body, now); err != nil {
			c.failLocked(err)
			return
		}
		c.trySend()
	}
}

func (c *Conn) finishDial(pkt *wire.Packet, body []byte, now time.Time) error {
	if !pkt.HasParam || len(pkt.EphemeralKey) != fcrypto.PublicLen || pkt.Src <= 0xffff {
		return post.Errorf(post.ErrMalformed, "fsp: bad ACK_CONNECT_REQ")
	}
	h, err := parseServerHello(body)
	if err != nil {
		return err
	}
	shared, err := c.kp.Shared(pkt.EphemeralKey)
	if err != nil {
		return post.Errorf(post.ErrAuthentication, "fsp: bad ephemeral key")
	}
	myParam := c.myParam()
	digest := transcript(c.local, pkt.Src, c.nonce[:], h.nonce, c.kp.Public[:], pkt.EphemeralKey,
		&myParam, &pkt.Param, h.chain)
	master := fcrypto.MasterSecret(shared, c.cfg.Security.PSK, c.nonce[:], h.nonce)
	confirm := fcrypto.HandshakeTag(fcrypto.ConfirmKey(master), digest)
	if string(confirm[:]) != string(h.confirm) {
		return post.Errorf(post.ErrAuthentication, "fsp: key confirmation failed (PSK mismatch?)")
	}
	if err := verifyServer(c.cfg, h, digest); err != nil {
		return err
	}
	for _, der := range h.chain {
		if cert, err := x509.ParseCertificate(der); err == nil {
			c.peerCerts = append(c.peerCerts, cert)
		}
	}
	c.peer, c.peerKnown = pkt.Src, true
	c.peerParam = pkt.Param
	c.master = master
	c.installKeys()
	c.kp, c.hsPacket = nil, nil
	c.establish(now)
	// Confirm to the responder at once; repeated until it answers.
	c.ackReq = true
	c.rtoAt = now.Add(hsInitialRTO)
	close(c.established)
	return nil
}

// respond runs the responder's side on a CONNECT_REQUEST whose cookie
// checked out.
func (c *Conn) respond(key, clientNonce []byte, pkt *wire.Packet) error {
	l := c.listener
	kp, err := fcrypto.NewKeyPair()
	if err != nil {
		return err
	}
	shared, err := kp.Shared(pkt.EphemeralKey)
	if err != nil {
		return post.Errorf(post.ErrMalformed, "fsp: bad ephemeral key")
	}
	rand.Read(c.nonce[:])
	myParam := c.myParam()
	chain := l.id.Certificate
	digest := transcript(pkt.Src, c.local, clientNonce, c.nonce[:], pkt.EphemeralKey, kp.Public[:],
		&pkt.Param, &myParam, chain)
	master := fcrypto.MasterSecret(shared, c.cfg.Security.PSK, clientNonce, c.nonce[:])
	sig, err := signTranscript(l.id.PrivateKey, digest)
	if err != nil {
		return err
	}
	confirm := fcrypto.HandshakeTag(fcrypto.ConfirmKey(master), digest)
	hello := serverHello{nonce: c.nonce[:], chain: chain, sig: sig, confirm: confirm[:]}
	p := wire.Packet{
		Header:       wire.Header{Opcode: wire.AckConnectReq, Dst: pkt.Src, Src: c.local},
		HasParam:     true,
		Param:        myParam,
		EphemeralKey: kp.Public[:],
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.hsKey = key
	c.resetKey = fcrypto.HandshakeKey(c.cfg.Security.PSK, c.local)
	c.peerNonce = append([]byte(nil), clientNonce...)
	c.peerKnown = true
	c.peerParam = pkt.Param
	c.master = master
	c.installKeys()
	c.hsPacket = handshakePacket(make([]byte, 0, wire.HeaderLen+64+fcrypto.TagLen+600+l.chainLen), key, &p, hello.append(nil))
	c.state = stateAffirming
	c.t.write(c.hsPacket, &c.remote)
	c.armTimer()
	return nil
}

// resendAffirm answers a repeated CONNECT_REQUEST.
func (c *Conn) resendAffirm(nonce []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateAffirming && string(nonce) == string(c.peerNonce) {
		c.t.write(c.hsPacket, &c.remote)
	}
}

// installKeys derives the traffic keys of generation keyGen from master.
func (c *Conn) installKeys() {
	if c.keyInitiator == 0 {
		c.keyInitiator, c.keyResponder = c.local, c.peer
		if !c.initiator {
			c.keyInitiator, c.keyResponder = c.peer, c.local
		}
	}
	i2r, r2i := fcrypto.TrafficSecrets(c.master, c.keyInitiator, c.keyResponder)
	tx, rx := i2r, r2i
	if !c.initiator {
		tx, rx = r2i, i2r
	}
	c.tx = fcrypto.NewDirection(tx)
	c.rx[c.keyGen&1] = fcrypto.NewDirection(rx)
}

// InstallKey mixes a secret agreed by the upper layer (for example by an
// application-level key exchange run over this connection) into the
// session keys. Packets sent after the call use the new keys, marked by
// the key phase flag; both ends must install the same secret, and
// packets the peer protects with a key not installed here yet are dropped
// until it is (retransmission recovers them).
func (c *Conn) InstallKey(secret []byte) error {
	if len(secret) < 16 {
		return post.Errorf(post.ErrAuthentication, "fsp: installed key shorter than 16 bytes")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateEstablished {
		return c.stateErr()
	}
	c.master = fcrypto.InstallSecret(c.master, secret)
	c.keyGen++
	c.installKeys()
	return nil
}

func (c *Conn) establish(now time.Time) {
	c.state = stateEstablished
	c.snd = reliability.NewSender[txData](1)
	c.rcv = reliability.NewReceiver[rxData](1)
	c.peerLimit = 1 + uint64(c.peerParam.Window)
	c.advLimit = 1 + uint64(c.rcvCap)
	cc, err := congestion.New(c.cfg.Congestion, congestion.Config{MSS: MaxDatagramSize})
	if err != nil {
		cc = congestion.NewCubic(congestion.Config{MSS: MaxDatagramSize})
	}
	c.cc = cc
	c.rtt.SetMaxAckDelay(maxAckDelay)
	// A lower floor than TCP's 200 ms repairs a lone lost packet (the last
	// of a message, say) quickly; see docs/benchmarks-hol.md.
	c.rtt.SetMinRTO(minRTO)
	if !c.cfg.DisablePacing {
		c.pacer = congestion.NewPacer(MaxDatagramSize)
	}
	c.lastRecv, c.lastKA = now, now
	c.initPaths(now)
	c.log.Debug("fsp: connection established", "local", c.local, "peer", c.peer, "remote", c.remote, "initiator", c.initiator)
}

// failLocked ends a connection attempt. Called with c.mu held.
func (c *Conn) failLocked(err error) {
	c.mu.Unlock()
	c.teardown(err, false)
	c.mu.Lock()
}

// ---- Receiving ----------------------------------------------------------

// handlePacket processes one datagram addressed to this connection. It
// reports whether the connection has something to send: the read loop
// then calls flush once per batch of datagrams.
func (c *Conn) handlePacket(b []byte, from *peerAddr, pkt *wire.Packet) *Conn {
	c.mu.Lock()
	if c.peerKnown && pkt.Src != c.peer && c.state >= stateEstablished && pkt.Opcode > wire.AckConnectReq {
		c.mu.Unlock()
		return c.routeClone(b, from, pkt)
	}
	var deliver *Listener
	c.receive(b, from, pkt, &deliver)
	more := c.state == stateEstablished || c.state == stateClosing
	c.mu.Unlock()
	if deliver != nil {
		c.t.mu.Lock()
		if c.t.pending[c.pendKey] == c {
			delete(c.t.pending, c.pendKey)
		}
		c.t.mu.Unlock()
		deliver.deliver(c)
	}
	if !more {
		return nil
	}
	return c
}

// routeClone hands a packet from one of the peer's clones of c to that
// clone, making the clone when a MULTIPLY authenticates.
func (c *Conn) routeClone(b []byte, from *peerAddr, pkt *wire.Packet) *Conn {
	c.mu.Lock()
	clone := c.clones[pkt.Src]
	fresh := false
	if clone == nil && pkt.Opcode == wire.Multiply && c.state == stateEstablished && !c.usedClones[pkt.Src] {
		clone, fresh = c.newClone(pkt.Src, false), true
	}
	c.mu.Unlock()
	if clone == nil {
		return nil
	}
	fc := clone.handlePacket(b, from, pkt)
	if !fresh {
		return fc
	}
	clone.mu.Lock()
	ok := clone.stats.PacketsReceived > 0
	clone.mu.Unlock()
	c.mu.Lock()
	if !ok {
		// The MULTIPLY did not authenticate: forget the clone.
		delete(c.clones, pkt.Src)
		delete(c.usedClones, pkt.Src)
		c.mu.Unlock()
		clone.teardown(post.Errorf(post.ErrMalformed, "fsp: forged MULTIPLY"), false)
		return nil
	}
	q := c.forkQueue()
	c.mu.Unlock()
	select {
	case q <- clone:
	default:
		clone.teardown(post.Errorf(post.ErrRefused, "fsp: fork queue full"), true)
		return nil
	}
	return fc
}

func (c *Conn) forkQueue() chan *Conn {
	if c.forks == nil {
		c.forks = make(chan *Conn, 16)
	}
	return c.forks
}

// newClone makes a clone of c, called with c.mu held. If forked, this end
// forks it and the peer's ALFID is learnt from its first answer;
// otherwise the peer forked it with ALFID peerClone.
func (c *Conn) newClone(peerClone uint32, forked bool) *Conn {
	cl := newConn(c.t, c.cfg, forked, c.remote)
	cl.parent = c
	cl.master = c.master
	cl.peerParam = c.peerParam
	for {
		if err := c.t.register(cl); err != nil {
			return nil
		}
		if !forked || !c.usedClones[cl.local] {
			break
		}
		c.t.unregister(cl) // never reuse a clone ALFID: it would reuse keys
	}
	if c.usedClones == nil {
		c.usedClones = make(map[uint32]bool)
	}
	if forked {
		cl.peer = c.peer
		cl.keyInitiator, cl.keyResponder = cl.local, c.peer
		c.usedClones[cl.local] = true
	} else {
		cl.peer, cl.peerKnown = peerClone, true
		cl.keyInitiator, cl.keyResponder = peerClone, c.local
		c.usedClones[peerClone] = true
		if c.clones == nil {
			c.clones = make(map[uint32]*Conn)
		}
		c.clones[peerClone] = cl
	}
	cl.installKeys()
	cl.establish(time.Now())
	cl.confirmed = !forked
	return cl
}

// Fork clones the connection (MULTIPLY): the clone shares the session
// keys, so it needs no handshake and its first packet can carry data. The
// peer receives it from AcceptFork. The clone is wine-class, like every
// connection: see ForkClass.
func (c *Conn) Fork(ctx context.Context) (*Conn, error) {
	return c.ForkClass(ctx, psi.Wine)
}

// ForkClass clones the connection with the given traffic class. A milk
// clone (psi.Milk) delivers the newest messages: each message is one
// transmit transaction, and once a newer message is complete the older
// unacknowledged ones are neither sent nor retransmitted again, the
// receiver skips what is missing of them, and a receiver whose reader is
// slow drops the oldest complete messages unread. Messages stay whole and
// in order: a reader never sees an older message after a newer one.
func (c *Conn) ForkClass(ctx context.Context, class psi.TrafficClass) (*Conn, error) {
	c.mu.Lock()
	if c.state != stateEstablished || c.peerReleased {
		err := c.stateErr()
		c.mu.Unlock()
		return nil, err
	}
	cl := c.newClone(0, true)
	c.mu.Unlock()
	if cl == nil {
		return nil, post.Errorf(post.ErrClosed, "fsp: transport closed")
	}
	if class == psi.Milk {
		cl.mu.Lock()
		cl.setMilk()
		cl.mu.Unlock()
	}
	// The clone announces itself with its first packet: the first message
	// written travels in it (zero round trips). If nothing is written
	// within forkAnnounce, a MULTIPLY without data announces it, repeated
	// until the peer's clone answers.
	cl.mu.Lock()
	cl.rtoAt = time.Now().Add(c.cfg.announceDelay())
	cl.armTimer()
	cl.mu.Unlock()
	return cl, nil
}

// AcceptFork returns the next clone the peer forked from this connection.
func (c *Conn) AcceptFork(ctx context.Context) (*Conn, error) {
	c.mu.Lock()
	q := c.forkQueue()
	c.mu.Unlock()
	select {
	case cl := <-q:
		return cl, nil
	case <-c.done:
		return nil, c.Err()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// flush sends what the received packets called for and runs the
// acknowledgement callbacks. Called by the read loop.
func (c *Conn) flush() {
	c.mu.Lock()
	c.dirty = false
	c.trySend()
	fns := c.ackedFns
	c.ackedFns = nil
	c.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

func (c *Conn) receive(b []byte, from *peerAddr, pkt *wire.Packet, deliver **Listener) {
	switch c.state {
	case stateClosed:
		return
	case stateInitiating, stateRequesting:
		if pkt.Opcode == wire.Reset {
			if _, ok := fcrypto.VerifyHandshakeTag(c.resetKey, b); ok {
				c.failLocked(post.Errorf(post.ErrRefused, "fsp: connection refused"))
			}
			return
		}
		c.onHandshakeReply(b, pkt)
		return
	}
	if pkt.Opcode <= wire.AckConnectReq {
		return // stray handshake packet
	}
	if pkt.Opcode == wire.Reset && len(pkt.Payload) == fcrypto.TagLen {
		// Unauthenticated RESET: only believed when closing with all data
		// acknowledged, when the peer already forgot the connection.
		if c.state == stateClosing && c.snd.Base() >= c.releaseSeq {
			if _, ok := fcrypto.VerifyHandshakeTag(c.resetKey, b); ok {
				c.releaseDone()
			}
			return
		}
	}
	d := c.rx[0]
	if pkt.Flags&wire.FlagKeyPhase != 0 {
		d = c.rx[1]
	}
	if d == nil || len(pkt.Payload) > MaxPayload+fcrypto.TagLen {
		c.stats.PacketsDropped++
		return
	}
	pn := wire.DecodeSeq(c.replay.Largest()+1, pkt.PN)
	if !c.replay.Check(pn) {
		c.stats.PacketsDropped++
		return
	}
	buf := getBuf()
	pt, err := d.Open((*buf)[:0], pn, pkt.HeaderBytes, pkt.Payload)
	if err != nil {
		c.stats.PacketsDropped++
		putBuf(buf)
		return
	}
	c.stats.PacketsReceived++
	newest := pn >= c.replay.Largest()
	c.replay.Mark(pn)
	now := time.Now()
	c.lastRecv = now
	if c.state == stateAffirming {
		c.establish(now)
		c.hsPacket = nil
		*deliver = c.listener
	}
	c.onPathPacket(from, len(b), newest, pkt, now)
	c.confirmed = true
	if c.initiator && c.ackReq && c.snd.Len() == 0 {
		c.rtoAt = time.Time{}
	}
	c.ackReq = false

	c.onAck(now, pkt)
	keep := false
	if !c.peerKnown {
		c.peer, c.peerKnown = pkt.Src, true // the peer's clone answered
	}
	if pkt.HasSkip && !c.milk && c.parent != nil && c.stats.PacketsReceived == 1 {
		c.setMilk() // the peer forked a milk clone; a root stays wine
	}
	if c.milk && pkt.HasSkip {
		c.skipTo(wire.DecodeSeq(c.rcv.Expected(), pkt.Skip))
	}
	switch pkt.Opcode {
	case wire.Multiply:
		if len(pt) > 0 || pkt.Flags&wire.FlagEOT != 0 {
			keep = c.onData(now, pkt, buf, pt)
		} else if pkt.Flags&wire.FlagAckRequest != 0 {
			c.ackNow = true // an announcement without data
		}
	case wire.PureData, wire.Persist, wire.Release:
		keep = c.onData(now, pkt, buf, pt)
	case wire.KeepAlive:
		if pkt.Flags&wire.FlagAckRequest != 0 {
			c.ackNow = true
		}
	case wire.Reset:
		putBuf(buf)
		c.failLocked(post.Errorf(post.ErrReset, "fsp: connection reset by peer"))
		return
	}
	if !keep {
		putBuf(buf)
	}
}

// onAck processes the acknowledgement fields every protected packet
// carries.
func (c *Conn) onAck(now time.Time, pkt *wire.Packet) {
	expected := wire.DecodeSeq(c.snd.Base(), pkt.Expected)
	if lim := expected + uint64(pkt.Window); lim > c.peerLimit {
		c.peerLimit = lim
	}
	if expected <= c.snd.Base() && !pkt.HasSNACK {
		return
	}
	c.gapsIn = c.gapsIn[:0]
	var ackDelay time.Duration
	if pkt.HasSNACK {
		for _, g := range pkt.SNACK.Gaps {
			c.gapsIn = append(c.gapsIn, reliability.Gap{Gap: uint64(g.Gap), Data: uint64(g.Data)})
		}
		ackDelay = time.Duration(pkt.SNACK.AckDelay) * time.Microsecond
	}
	prior := c.snd.BytesInFlight()
	c.snd.OnAck(now, expected, c.gapsIn, 0, c.lossDelay(), &c.ackRes)
	res := &c.ackRes
	if res.HasRTT {
		c.rtt.Update(res.RTTSample, ackDelay)
		if c.active != nil {
			c.active.rtt.Update(res.RTTSample, ackDelay)
		}
	}
	for _, e := range res.Acked {
		if e.Abandoned {
			// Accounted for when abandoned; the peer skipped it or got it.
			if e.Sent {
				c.cc.OnAck(now, e.Value.pn, e.Bytes, prior, &c.rtt)
			}
			continue
		}
		c.cc.OnAck(now, e.Value.pn, e.Bytes, prior, &c.rtt)
		c.sndBytes -= e.Value.n + overhead
		if e.Value.buf != nil {
			putBuf(e.Value.buf)
			e.Value.buf = nil
		}
		if e.Value.acked != nil {
			c.ackedFns = append(c.ackedFns, e.Value.acked)
			e.Value.acked = nil
		}
	}
	c.onLost(now, res.Lost, prior)
	if c.state == stateClosing && c.snd.Base() > c.releaseSeq {
		// Everything up to and including the RELEASE is acknowledged. A
		// selective acknowledgement of the RELEASE alone is not enough:
		// data before it may still need retransmitting.
		c.releaseDone()
	}
	if res.Progress || len(res.Acked) > 0 {
		c.lastProgress = now
		c.backoff = 0
		c.rtoAt = time.Time{}
		if c.snd.BytesInFlight() > 0 || c.milk && c.snd.Base() < c.milkLive {
			c.rtoAt = now.Add(c.rto())
		}
		signal(c.writable)
	}
	if c.pacer != nil {
		c.pacer.SetRate(c.cc.PacingRate(&c.rtt))
	}
	c.lossAt = c.snd.DetectLoss(now, c.lossDelay(), &c.ackRes)
	c.onLost(now, c.ackRes.Lost, prior)
}

func (c *Conn) onLost(now time.Time, lost []*reliability.Entry[txData], prior int) {
	for _, e := range lost {
		c.cc.OnLoss(now, e.Value.pn, e.Bytes, prior)
		if e.Value.path != nil {
			e.Value.path.lost++
		}
	}
	if len(lost) > 0 {
		c.supersede()
	}
}

// rto is the retransmission timeout with exponential backoff; the
// backoff resets on any acknowledgement progress.
func (c *Conn) rto() time.Duration {
	return min(c.rtt.RTO()<<min(c.backoff, 16), congestion.MaxRTO)
}

func (c *Conn) lossDelay() time.Duration {
	d := max(c.rtt.SmoothedRTT(), c.rtt.LatestRTT())
	return max(d*9/8, time.Millisecond)
}

func (c *Conn) releaseDone() {
	select {
	case <-c.released:
	default:
		close(c.released)
	}
}

// onData buffers a data packet; it reports whether buf was kept.
func (c *Conn) onData(now time.Time, pkt *wire.Packet, buf *[]byte, pt []byte) bool {
	seq := wire.DecodeSeq(c.rcv.Expected(), pkt.Seq)
	inOrder := seq == c.rcv.Expected()
	d := rxData{buf: buf, data: pt, eot: pkt.Flags&wire.FlagEOT != 0, release: pkt.Opcode == wire.Release}
	kept := c.rcv.Insert(seq, d, c.rcv.Expected()+uint64(c.window()))
	c.ackPending++
	if !kept || !inOrder || c.rcv.HasGaps() || d.release || pkt.Flags&wire.FlagAckRequest != 0 {
		c.ackNow = true
	}
	if kept && seq >= c.rcv.Largest() {
		c.largestAt = now
	}
	c.popInOrder()
	if c.ackPending >= ackEvery {
		c.ackNow = true
	} else if c.ackAt.IsZero() {
		c.ackAt = now.Add(maxAckDelay)
	}
	return kept
}

// popInOrder moves the in-order packets to the read queue. On a milk
// connection only complete messages go there, the oldest unread ones
// evicted when the queue is full.
func (c *Conn) popInOrder() {
	popped := false
	for {
		v, ok := c.rcv.Pop()
		if !ok {
			break
		}
		if v.release {
			putBuf(v.buf)
			c.peerReleased = true
			c.dropAsm()
			popped = true
			continue
		}
		if !c.milk {
			c.pushRead(v)
			popped = true
			continue
		}
		c.asm = append(c.asm, v)
		if v.eot {
			for i, d := range c.asm {
				c.pushRead(d)
				c.asm[i] = rxData{}
			}
			c.asm = c.asm[:0]
			c.evict()
			popped = true
		}
	}
	if popped {
		signal(c.readable)
	}
}

func (c *Conn) dropAsm() {
	for i, d := range c.asm {
		putBuf(d.buf)
		c.asm[i] = rxData{}
	}
	c.asm = c.asm[:0]
}

// evict drops the oldest complete messages the reader has not begun while
// the read queue holds more than the receive buffer, never the newest.
func (c *Conn) evict() {
	for c.readLen() > c.rcvCap {
		i := c.readHead
		if c.readMid || c.readOff > 0 {
			for i < len(c.readQ) && !c.readQ[i].eot {
				i++
			}
			i++ // the message being read stays
		}
		j := i
		for j < len(c.readQ) && !c.readQ[j].eot {
			j++
		}
		if j >= len(c.readQ)-1 {
			return // the newest message stays
		}
		for k := i; k <= j; k++ {
			putBuf(c.readQ[k].buf)
		}
		n := copy(c.readQ[i:], c.readQ[j+1:])
		clear(c.readQ[i+n:])
		c.readQ = c.readQ[:i+n]
		c.stats.Evicted++
	}
}

// skipTo stops waiting for the sequence numbers below seq, which the
// milk sender superseded: buffered packets below it and the incomplete
// message are dropped.
func (c *Conn) skipTo(seq uint64) {
	exp := c.rcv.Expected()
	if seq <= exp {
		return
	}
	c.stats.Skipped += seq - exp
	c.rcv.SkipTo(seq, func(d rxData) { putBuf(d.buf) })
	c.dropAsm()
	c.ackNow = true
	c.popInOrder()
}

// setMilk makes c a milk-class connection.
func (c *Conn) setMilk() {
	c.milk = true
	c.maxPayload = MaxPayload - wire.SkipLen
	c.milkLive, c.msgStart, c.newest = 1, 1, 1
	if c.snd != nil {
		c.milkLive, c.msgStart, c.newest = c.snd.Next(), c.snd.Next(), c.snd.Next()
	}
}

// window is the receive window in packets beyond the expected sequence
// number.
func (c *Conn) window() int {
	if c.milk {
		// Complete messages waiting to be read never close the window:
		// older ones are evicted for newer ones.
		return max(c.rcvCap-len(c.asm), 0)
	}
	return max(c.rcvCap-c.readLen(), 0)
}

func (c *Conn) readLen() int { return len(c.readQ) - c.readHead }

func (c *Conn) pushRead(v rxData) {
	if len(c.readQ) == cap(c.readQ) && c.readHead > len(c.readQ)/2 {
		n := copy(c.readQ, c.readQ[c.readHead:])
		clear(c.readQ[n:])
		c.readQ, c.readHead = c.readQ[:n], 0
	}
	c.readQ = append(c.readQ, v)
}

func (c *Conn) popRead() {
	c.readQ[c.readHead] = rxData{}
	c.readHead++
	if c.readHead == len(c.readQ) {
		c.readHead = 0
		c.readQ = c.readQ[:0]
		if cap(c.readQ) > 256 {
			c.readQ = nil // do not pin a burst's worth of memory while idle
		}
	}
}

// ---- Sending ------------------------------------------------------------

// trySend sends what the windows, the pacer and pending acknowledgements
// allow. Called with c.mu held; it drops the lock while writing.
func (c *Conn) trySend() {
	if c.sending {
		c.sendAgain = true
		return
	}
	c.sending = true
	for c.state == stateEstablished || c.state == stateClosing {
		c.sendAgain = false
		now := time.Now()
		c.fill(now)
		if len(c.out) == 0 {
			break
		}
		to := c.remote
		out := c.out
		c.mu.Unlock()
		c.t.writeBatch(out, &to)
		for _, b := range out {
			putBuf(b)
		}
		c.mu.Lock()
		clear(out)
		full := len(out) == maxBatch
		c.out = out[:0]
		if !full && !c.sendAgain {
			break
		}
	}
	c.sending = false
	c.armTimer()
}

// fill builds up to maxBatch packets into c.out.
func (c *Conn) fill(now time.Time) {
	if c.out == nil {
		c.out = make([]*[]byte, 0, maxBatch)
	}
	for len(c.out) < maxBatch {
		probe := c.probes > 0
		if !probe && !c.cc.CanSend(c.snd.BytesInFlight()) {
			break
		}
		if c.pacer != nil && !probe {
			// Delays below the timer granularity are not worth a timer:
			// send now and let the pacer run into debt, as quic-go does.
			if d := c.pacer.TimeUntilSend(now, MaxDatagramSize); d > minPacingDelay {
				c.paceAt = now.Add(d)
				break
			}
		}
		e := c.snd.NextToSend(c.peerLimit)
		if e == nil {
			if c.milk && c.snd.PeekNew() != nil && c.skipSent < c.milkLive {
				// Blocked by the peer's window, which superseded data may
				// fill: tell it the skip point and ask for an update.
				c.ackReq = true
			}
			if c.snd.PeekNew() != nil && c.rtoAt.IsZero() {
				// Blocked by the peer's window: probe if no update comes.
				c.rtoAt = now.Add(c.rto())
			}
			break
		}
		if probe {
			c.probes--
		}
		c.sendData(now, e)
	}
	if c.ackReq || c.hasResp || c.ackNow && len(c.out) < maxBatch {
		c.sendAck(now)
	}
}

func (c *Conn) phaseFlag() uint8 {
	if c.keyGen&1 != 0 {
		return wire.FlagKeyPhase
	}
	return 0
}

func (c *Conn) header(op wire.Opcode, flags uint8, seq uint64) wire.Packet {
	lim := c.rcv.Expected() + uint64(c.window())
	c.advLimit = lim
	if c.milk {
		c.skipSent = c.milkLive
	}
	if !c.peerKnown && (op == wire.PureData || op == wire.KeepAlive) {
		op = wire.Multiply
	}
	return wire.Packet{Header: wire.Header{
		Opcode:   op,
		Flags:    flags | c.phaseFlag(),
		Window:   uint32(min(c.window(), wire.MaxWindow)),
		Seq:      uint32(seq),
		Expected: uint32(c.rcv.Expected()),
		PN:       uint32(c.pn),
		Dst:      c.peer,
		Src:      c.local,
	}, HasSkip: c.milk, Skip: uint32(c.milkLive)}
}

func (c *Conn) seal(p *wire.Packet, payload []byte) *[]byte {
	pn := c.pn
	c.pn++
	c.stats.PacketsSent++
	b := getBuf()
	hdr := wire.AppendHeader((*b)[:0], p)
	out, err := c.tx.Seal(hdr, pn, hdr, payload)
	if err != nil {
		putBuf(b)
		return nil
	}
	*b = out[:len(out):cap(out)]
	return b
}

func (c *Conn) sendData(now time.Time, e *reliability.Entry[txData]) {
	p := c.header(e.Value.op, e.Value.flags, e.Seq)
	var payload []byte
	if e.Value.buf != nil {
		payload = (*e.Value.buf)[:e.Value.n]
	}
	pn := c.pn
	b := c.seal(&p, payload)
	if b == nil {
		return
	}
	c.out = append(c.out, b)
	if e.Sent {
		c.stats.Retransmissions++
	}
	c.snd.OnSent(e, now)
	e.Value.pn = pn
	e.Value.path = c.active
	if c.active != nil {
		c.active.sent++
	}
	c.cc.OnPacketSent(now, pn, e.Bytes, c.snd.BytesInFlight())
	if c.pacer != nil {
		c.pacer.OnSent(now, e.Bytes)
	}
	if c.rtoAt.IsZero() {
		c.rtoAt = now.Add(c.rto())
	}
	// The packet carries the cumulative acknowledgement.
	c.ackPending = 0
	c.ackAt = time.Time{}
	if !c.rcv.HasGaps() {
		c.ackNow = false
	}
}

// sendAck sends a KEEP_ALIVE with a SELECTIVE_NACK header.
func (c *Conn) sendAck(now time.Time) {
	var flags uint8
	if c.ackReq {
		flags = wire.FlagAckRequest
	}
	p := c.header(wire.KeepAlive, flags, c.snd.Next())
	p.HasSNACK = true
	p.SNACK.Latest = uint32(c.rcv.Largest())
	if !c.largestAt.IsZero() {
		p.SNACK.AckDelay = uint32(min(now.Sub(c.largestAt).Microseconds(), 1<<31))
	}
	c.gapsOut = c.rcv.Gaps(c.gapsOut[:0], wire.MaxGaps)
	c.wgaps = c.wgaps[:0]
	for _, g := range c.gapsOut {
		c.wgaps = append(c.wgaps, wire.Gap{Gap: uint32(min(g.Gap, 1<<32-1)), Data: uint32(min(g.Data, 1<<32-1))})
	}
	p.SNACK.Gaps = c.wgaps
	if c.hasResp {
		p.HasResponse, p.Response = true, c.respNonce
		c.hasResp = false
	}
	if b := c.seal(&p, nil); b != nil {
		c.out = append(c.out, b)
	}
	c.ackNow, c.ackReq = false, false
	c.ackPending = 0
	c.ackAt = time.Time{}
}

// ---- Timers -------------------------------------------------------------

// armTimer makes sure the timer fires by the earliest deadline. Called with
// c.mu held.
func (c *Conn) armTimer() {
	if c.state == stateClosed {
		return
	}
	var next time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	switch c.state {
	case stateInitiating, stateRequesting:
		at(c.rtoAt)
		at(c.hsDeadline)
	case stateAffirming:
		at(c.hsDeadline)
	default:
		at(c.rtoAt)
		at(c.ackAt)
		at(c.lossAt)
		at(c.paceAt)
		at(c.lastRecv.Add(c.cfg.idle()))
		if ka := c.cfg.keepAlive(); ka > 0 {
			at(c.lastKA.Add(ka))
		}
	}
	if next.IsZero() || (!c.timerAt.IsZero() && !next.Before(c.timerAt)) {
		return
	}
	c.timerAt = next
	d := time.Until(next)
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.onTimer)
	} else {
		c.timer.Reset(d)
	}
}

func (c *Conn) onTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timerAt = time.Time{}
	now := time.Now()
	switch c.state {
	case stateClosed:
		return
	case stateInitiating, stateRequesting:
		if !now.Before(c.hsDeadline) {
			c.failLocked(post.Errorf(post.ErrTimeout, "fsp: handshake timed out"))
			return
		}
		if !now.Before(c.rtoAt) {
			c.sendHandshake(now)
		}
		c.armTimer()
		return
	case stateAffirming:
		if !now.Before(c.hsDeadline) {
			c.failLocked(post.Errorf(post.ErrTimeout, "fsp: handshake not confirmed"))
			return
		}
		c.armTimer()
		return
	}
	if idle := c.cfg.idle(); now.Sub(c.lastRecv) >= idle {
		c.failLocked(post.Errorf(post.ErrTimeout, "fsp: peer silent for %v", idle))
		return
	}
	if !c.ackAt.IsZero() && !now.Before(c.ackAt) {
		c.ackNow = true
	}
	if !c.paceAt.IsZero() && !now.Before(c.paceAt) {
		c.paceAt = time.Time{}
	}
	if !c.lossAt.IsZero() && !now.Before(c.lossAt) {
		prior := c.snd.BytesInFlight()
		c.lossAt = c.snd.DetectLoss(now, c.lossDelay(), &c.ackRes)
		c.onLost(now, c.ackRes.Lost, prior)
	}
	if !c.rtoAt.IsZero() && !now.Before(c.rtoAt) {
		c.rtoAt = time.Time{}
		switch {
		case c.initiator && !c.confirmed:
			c.ackReq = true
			c.backoff++
			c.rtoAt = now.Add(c.rto())
		case c.snd.BytesInFlight() > 0 || c.snd.HasRetransmission():
			// Go back: everything in flight is presumed lost and resent
			// as the collapsed window allows.
			c.snd.OnTimeout(c.snd.Len())
			c.supersede()
			c.cc.OnRetransmissionTimeout()
			c.backoff++
			c.probes = 1
			c.rtoAt = now.Add(c.rto())
		case c.snd.HasPending():
			// Blocked by the peer's window: probe for an update.
			c.ackReq = true
			c.backoff++
			c.rtoAt = now.Add(c.rto())
		case c.milk && c.snd.Base() < c.milkLive:
			// The peer has not acknowledged the skip point: repeat it.
			c.ackReq = true
			c.backoff++
			c.rtoAt = now.Add(c.rto())
		}
		if c.backoff > maxBackoffs {
			c.failLocked(post.Errorf(post.ErrTimeout, "fsp: peer not acknowledging"))
			return
		}
	}
	if ka := c.cfg.keepAlive(); ka > 0 && now.Sub(c.lastKA) >= ka {
		c.lastKA = now
		if now.Sub(c.lastRecv) >= ka {
			c.ackReq = true
		}
	}
	c.trySend()
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

// WriteMessage appends p to the current outbound message (transmit
// transaction); end completes it, so the peer reads it as one message. It
// blocks while the send buffer is full.
func (c *Conn) WriteMessage(ctx context.Context, p []byte, end bool) error {
	return c.writeMessage(ctx, p, end, nil, false)
}

// Flush sends what writes with more set held back.
func (c *Conn) Flush() {
	c.mu.Lock()
	c.trySend()
	c.mu.Unlock()
}

// writeMessage is WriteMessage that calls acked once the peer
// acknowledged the whole message. With more, it queues the packets
// without sending them, so several messages leave in one batch; a later
// write without more, or Flush, sends them.
func (c *Conn) writeMessage(ctx context.Context, p []byte, end bool, acked func(), more bool) error {
	if len(p) == 0 && !end {
		return nil
	}
	// Copy into packet buffers outside the lock, a batch at a time, so
	// the read loop is not held up by large writes.
	var staged [maxBatch]txData
	pushed := false
	for !pushed || len(p) > 0 {
		k := 0
		for k < maxBatch && (!pushed || len(p) > 0) {
			n := min(len(p), c.maxPayload)
			d := txData{n: n, op: wire.PureData}
			if n > 0 {
				d.buf = getBuf()
				copy((*d.buf)[:n], p)
			}
			p = p[n:]
			if end && len(p) == 0 {
				d.flags, d.acked = wire.FlagEOT, acked
			}
			staged[k] = d
			k++
			pushed = true
		}
		c.mu.Lock()
		for c.state == stateEstablished && !c.peerReleased && c.sndBytes >= c.sndLimit {
			if c.milk && c.msgStart > c.milkLive {
				// Milk: the send buffer overflows; the oldest message
				// goes, sent or not.
				c.abandon(c.messageEnd(c.milkLive) + 1)
				continue
			}
			c.trySend() // packets held back by more must not wait forever
			c.mu.Unlock()
			if err := c.wait(ctx, c.writable); err != nil {
				releaseStaged(staged[:k])
				return err
			}
			c.mu.Lock()
		}
		var err error
		switch {
		case c.state != stateEstablished:
			err = c.stateErr()
		case c.peerReleased:
			err = post.Errorf(post.ErrClosed, "fsp: peer released the connection")
		}
		if err != nil {
			c.mu.Unlock()
			releaseStaged(staged[:k])
			return err
		}
		for i := range k {
			eot := staged[i].flags&wire.FlagEOT != 0
			seq := c.snd.Push(staged[i], staged[i].n+overhead)
			c.sndBytes += staged[i].n + overhead
			staged[i] = txData{}
			if c.milk && eot {
				// A complete message supersedes the older ones.
				c.newest, c.msgStart = c.msgStart, seq+1
				c.supersede()
			}
		}
		if !more || len(p) > 0 {
			c.trySend()
		}
		c.mu.Unlock()
	}
	return nil
}

// messageEnd returns the sequence number of the last packet of the
// message containing seq, or the last one pushed.
func (c *Conn) messageEnd(seq uint64) uint64 {
	for ; seq+1 < c.snd.Next(); seq++ {
		if e := c.snd.Get(seq); e != nil && e.Value.flags&wire.FlagEOT != 0 {
			break
		}
	}
	return seq
}

// supersede abandons, on a milk connection, the superseded messages (older
// than the newest complete one) that lost a packet, with every message
// before them: lost superseded data is not retransmitted.
func (c *Conn) supersede() {
	if !c.milk || c.newest <= c.milkLive {
		return
	}
	if seq, ok := c.snd.LastLost(c.newest); ok {
		c.abandon(min(c.messageEnd(seq)+1, c.newest))
	}
}

// abandon gives up on the unacknowledged messages below seq on a milk
// connection: they are neither sent nor retransmitted again, and the skip
// point sent in every packet tells the receiver not to wait for them.
func (c *Conn) abandon(seq uint64) {
	if seq <= c.milkLive {
		return
	}
	c.snd.Abandon(seq, func(e *reliability.Entry[txData]) {
		if e.Value.buf != nil {
			putBuf(e.Value.buf)
			e.Value.buf = nil
		}
		c.sndBytes -= e.Value.n + overhead
		e.Value.acked = nil
		c.stats.Superseded++
	})
	c.milkLive = seq
	// Every packet carries the skip point; send one now, and keep asking
	// for acknowledgements until the peer's cumulative acknowledgement
	// passes it.
	c.ackNow = true
	if c.rtoAt.IsZero() {
		c.rtoAt = time.Now().Add(c.rto())
	}
	signal(c.writable)
}

func releaseStaged(ds []txData) {
	for _, d := range ds {
		if d.buf != nil {
			putBuf(d.buf)
		}
	}
}

// SendMessage writes p as one whole message.
func (c *Conn) SendMessage(ctx context.Context, p []byte) error {
	return c.WriteMessage(ctx, p, true)
}

// ReadMessage reads from the current inbound message into p; end is true
// when the returned bytes complete the message. After the peer released
// the connection and everything was read it returns io.EOF.
func (c *Conn) ReadMessage(ctx context.Context, p []byte) (n int, end bool, err error) {
	c.mu.Lock()
	for {
		if c.readLen() > 0 {
			// Copy as many queued packets of the current message as fit.
			for c.readLen() > 0 {
				d := &c.readQ[c.readHead]
				k := copy(p[n:], d.data[c.readOff:])
				n += k
				c.readOff += k
				if c.readOff < len(d.data) {
					break
				}
				end = d.eot
				putBuf(d.buf)
				c.popRead()
				c.readOff = 0
				if end || n == len(p) {
					break
				}
			}
			c.readMid = !end
			// Announce a window that grew by a quarter or more.
			if c.state == stateEstablished && c.rcv.Expected()+uint64(c.window()) >= c.advLimit+uint64(c.rcvCap/4) {
				c.ackNow = true
				c.trySend()
			}
			c.mu.Unlock()
			return n, end, nil
		}
		if c.peerReleased {
			c.mu.Unlock()
			return 0, false, io.EOF
		}
		if c.state == stateClosed {
			err := c.stateErr()
			c.mu.Unlock()
			return 0, false, err
		}
		c.mu.Unlock()
		if err := c.wait(ctx, c.readable); err != nil {
			return 0, false, err
		}
		c.mu.Lock()
	}
}

// ReceiveMessage reads one whole message, up to Config.MaxMessageSize.
func (c *Conn) ReceiveMessage(ctx context.Context) ([]byte, error) {
	var msg []byte
	limit := c.cfg.maxMessage()
	buf := make([]byte, MaxPayload)
	for {
		n, end, err := c.ReadMessage(ctx, buf)
		if err != nil {
			return msg, err
		}
		if int64(len(msg)+n) > limit {
			return nil, post.Errorf(post.ErrMessageTooLarge, "fsp: message over %d bytes", limit)
		}
		msg = append(msg, buf[:n]...)
		if end {
			if msg == nil {
				msg = []byte{}
			}
			return msg, nil
		}
	}
}

// Close flushes what was written, sends RELEASE and waits for its
// acknowledgement, then frees the connection. It gives up waiting when
// the peer acknowledges nothing for 3 s (or four RTOs, if longer).
func (c *Conn) Close() error {
	c.mu.Lock()
	switch {
	case c.state == stateClosed:
		c.mu.Unlock()
		return nil
	case c.state == stateEstablished && !c.peerReleased:
		seq := c.snd.Push(txData{op: wire.Release, flags: wire.FlagEOT}, overhead)
		c.sndBytes += overhead
		c.releaseSeq = seq
		c.state = stateClosing
		c.lastProgress = time.Now()
		c.trySend()
		c.mu.Unlock()
		c.waitReleased()
	default:
		c.mu.Unlock()
	}
	c.teardown(post.Errorf(post.ErrClosed, "fsp: connection closed"), false)
	return nil
}

// waitReleased waits for the acknowledgement of our RELEASE, giving up
// when the peer stops acknowledging anything for a while.
func (c *Conn) waitReleased() {
	tm := time.NewTimer(closePoll)
	defer tm.Stop()
	for {
		select {
		case <-c.released:
			return
		case <-c.done:
			return
		case <-tm.C:
		}
		c.mu.Lock()
		// Give up only after several retransmissions went unanswered:
		// giving up on time alone, before a backed-off retransmission is
		// due, would lose the tail of the data on a lossy path.
		stalled := time.Since(c.lastProgress) > closeStall && c.backoff >= closeBackoffs
		c.mu.Unlock()
		if stalled {
			return
		}
		tm.Reset(closePoll)
	}
}

// teardown frees the connection. With reset it tells the peer by a
// protected RESET.
func (c *Conn) teardown(err error, reset bool) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	if reset && c.tx != nil && c.rcv != nil {
		p := c.header(wire.Reset, 0, c.snd.Next())
		if b := c.seal(&p, nil); b != nil {
			c.t.write(*b, &c.remote)
			putBuf(b)
		}
	}
	c.state, c.err = stateClosed, err
	c.log.Debug("fsp: connection closed", "local", c.local, "peer", c.peer, "remote", c.remote, "err", err)
	if c.timer != nil {
		c.timer.Stop()
	}
	for _, d := range c.readQ[c.readHead:] {
		putBuf(d.buf)
	}
	c.readQ, c.readHead = nil, 0
	c.dropAsm()
	if c.rcv != nil {
		c.rcv.Drain(func(d rxData) { putBuf(d.buf) })
	}
	if c.snd != nil {
		for seq := c.snd.Base(); seq < c.snd.Next(); seq++ {
			if e := c.snd.Get(seq); e != nil && e.Value.buf != nil {
				putBuf(e.Value.buf)
				e.Value.buf = nil
			}
		}
	}
	select {
	case <-c.established:
	default:
		close(c.established)
	}
	close(c.done)
	parent, peer := c.parent, c.peer
	c.mu.Unlock()
	if parent != nil {
		parent.mu.Lock()
		if parent.clones[peer] == c {
			delete(parent.clones, peer)
		}
		parent.mu.Unlock()
	}
	c.t.unregister(c)
}

func (c *Conn) debugState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := fmt.Sprintf("%x->%x remote=%v state=%d ini=%v conf=%v readQ=%d peerRel=%v rtoAt=%v timerAt=%v ackReq=%v sending=%v probes=%d pn=%d", c.local, c.peer, c.remote, c.state, c.initiator, c.confirmed, c.readLen(), c.peerReleased, time.Until(c.rtoAt), time.Until(c.timerAt), c.ackReq, c.sending, c.probes, c.replay.Largest())
	if c.snd != nil {
		s += fmt.Sprintf(" milk=%v sndBytes=%d live=%d msgStart=%d newest=%d skipSent=%d asm=%d", c.milk, c.sndBytes, c.milkLive, c.msgStart, c.newest, c.skipSent, len(c.asm))
		s += fmt.Sprintf(" snd base=%d next=%d inflight=%d pending=%v peerLimit=%d cwnd=%d rcvExp=%d ooo=%d", c.snd.Base(), c.snd.Next(), c.snd.BytesInFlight(), c.snd.HasPending(), c.peerLimit, c.cc.Window(), c.rcv.Expected(), c.rcv.Buffered())
	}
	return s
}
