package fsp

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/internal/sockerr"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Transport runs FSP over one net.PacketConn: a UDP socket, an ICE
// connection, an emulated link or a socket shared with QUIC. One goroutine
// reads the socket and hands packets to connections by destination
// ALFID; datagrams that are not FSP (first octet not zero, so every QUIC
// packet) are queued for ReadNonFSPPacket.
//
// The zero value with Conn set is ready; the Transport starts reading at
// the first Dial or Listen. Close stops it without closing Conn, by
// setting a read deadline in the past: Conn must honour it.
type Transport struct {
	// Conn carries the datagrams. It must not be changed once used.
	Conn net.PacketConn
	// Logger receives transport-level debug logs; nil discards them.
	Logger *slog.Logger

	once    sync.Once
	owned   bool // Conn was created by Dial or Listen: Close closes it
	udp     *net.UDPConn
	sio     sockio.Conn // batched I/O on udp
	log     *slog.Logger
	jar     *fcrypto.CookieJar
	limiter handshakeLimiter // read loop only
	hs      hsPool           // a listener's handshake workers (hspool.go)
	done    chan struct{}    // closed by Close
	loopEnd chan struct{}    // closed when the read loop returns
	fine    fineTimer        // the connections' near deadlines (finetimer.go)
	// sendHook, set by tests before use, runs in trySend between building
	// a batch and sending it: it widens that window.
	sendHook atomic.Pointer[func()]
	// readHook, set by tests, runs in the read loop before each read: it
	// can hold the reader as a starved host does.
	readHook atomic.Pointer[func()]
	// cookieLife, set by tests before use, is the handshake cookies'
	// lifetime; zero means cookieLifetime.
	cookieLife time.Duration

	mu       sync.Mutex
	conns    map[uint32]*Conn // by local ALFID
	pending  pendingTable     // responder connections awaiting confirmation
	listener *Listener
	closed   bool
	closeErr error
	// closeWhenIdle closes an owned transport with its last connection.
	closeWhenIdle bool
	// foreignUsers counts open NonFSPConn handles; they keep an idle
	// transport open.
	foreignUsers int
	// foreignDirect: ReadNonFSPPacket was called, so foreign datagrams
	// are queued whatever foreignUsers.
	foreignDirect bool

	// responders holds every responder connection by its handshake's
	// client address and ALFID until it closes, so a replayed
	// CONNECT_REQUEST cannot start a second one (its cookie is still
	// good). Guarded by mu.
	responders map[pendingKey]*Conn

	// foreign queues the datagrams that are not FSP's, fairly between
	// source prefixes, while someone reads them (foreignOn: a NonFSPConn
	// is open or ReadNonFSPPacket was called) (foreign_queue.go).
	foreign   foreignQueue
	foreignOn atomic.Bool
	// recvErr is set while ICMP errors are reported on an owned dialing
	// socket: ECONNREFUSED then refuses the connections being set up,
	// and an established connection reports ICMP errors as SoftErrors.
	recvErr atomic.Bool

	// queued is the bytes (queueCost a datagram) the socket reader has
	// queued on connections and their loops have not processed yet;
	// queueCap bounds it (zero: maxQueuedBytes), so connections whose
	// loops are starved cannot together hold more (conn_loop.go).
	queued   atomic.Int64
	queueCap int64
	// peers counts the queued bytes by peer address (conn_loop.go,
	// peerQueue; guarded by mu); peerCap bounds each (zero: a quarter of
	// the Transport's bound).
	peers   map[netip.Addr]*peerQueue
	peerCap int64
	// icmpPending: a send returned an ICMP error, so the error queue
	// has entries the read loop did not hear of.
	icmpPending atomic.Bool
	// reset makes the reset tokens of a listener's connections and its
	// stateless resets (reset_token.go); nil without a listener.
	reset atomic.Pointer[resetKeys]
	// rcvbuf sizes a listener's socket buffer (rcvbuf.go); reader only.
	rcvbuf rcvbufTuner
}

const socketBuffer = 4 << 20

// cookieLifetime is how long a handshake cookie stays good; the secret
// that makes them rotates as often.
const cookieLifetime = 30 * time.Second

type pendingKey struct {
	addr  netip.AddrPort
	alfid uint32
}

// peerAddr is a remote address in both forms: netip for the UDP fast path
// and net.Addr for any other PacketConn.
type peerAddr struct {
	ap   netip.AddrPort
	addr net.Addr
	dst  netip.Addr // on receive: the local address the packet came to, if known
}

func (p peerAddr) String() string {
	if p.addr != nil {
		return p.addr.String()
	}
	return p.ap.String()
}

func toPeerAddr(a net.Addr) peerAddr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ap := v.AddrPort()
		return peerAddr{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), addr: a}
	case nil:
		return peerAddr{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return peerAddr{ap: ap, addr: a}
}

func (t *Transport) init() {
	t.once.Do(func() {
		t.udp, _ = t.Conn.(*net.UDPConn)
		if t.udp != nil {
			t.sio = sockio.New(t.udp)
			setNoFragment(t.udp) // path MTU discovery (pmtud.go)
		}
		if t.owned && t.udp != nil {
			// Best effort: the kernel caps these at net.core.[rw]mem_max
			// unless the process may force them (sockio.SetReadBuffer).
			sockio.SetReadBuffer(t.udp, socketBuffer)
			if t.listener != nil {
				t.rcvbuf = rcvbufTuner{on: true, size: socketBuffer, drops: sockio.Drops(t.udp)}
			}
			t.udp.SetWriteBuffer(socketBuffer)
		}
		t.log = t.Logger
		if t.log == nil {
			t.log = slog.New(slog.DiscardHandler)
		}
		t.jar = fcrypto.NewCookieJar(cmp.Or(t.cookieLife, cookieLifetime))
		t.done = make(chan struct{})
		t.loopEnd = make(chan struct{})
		t.conns = make(map[uint32]*Conn)
		go t.readLoop()
	})
}

// LocalAddr returns the local address of the underlying connection.
func (t *Transport) LocalAddr() net.Addr { return t.Conn.LocalAddr() }

// Close closes every connection and stops the read loop. It closes Conn
// only if Dial or Listen created it.
func (t *Transport) Close() error {
	t.init()
	t.closeWith(post.ErrClosed)
	<-t.loopEnd
	return nil
}

func (t *Transport) closeWith(err error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed, t.closeErr = true, err
	conns := make([]*Conn, 0, len(t.conns))
	for _, c := range t.conns {
		conns = append(conns, c)
	}
	l := t.listener
	t.mu.Unlock()
	close(t.done)
	t.fine.close()
	if l != nil {
		l.shutdown()
	}
	for _, c := range conns {
		c.teardown(post.Errorf(post.ErrClosed, "fsp: transport closed"), false)
	}
	if t.owned {
		t.Conn.Close()
	} else {
		// Unblock the read loop without closing the caller's socket.
		t.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// ReadNonFSPPacket returns the next datagram that is not FSP, for a
// protocol sharing the socket (QUIC sets bit 0x40 of its first octet; FSP
// never does). Once it has been called, or while a NonFSPConn is open,
// such datagrams wait for it, at most foreignQueueLen of them and
// foreignQueueBytes in all, shared fairly between source prefixes
// (foreign_queue.go); more are dropped, as are those that arrive while
// nobody reads them.
func (t *Transport) ReadNonFSPPacket(ctx context.Context, b []byte) (int, net.Addr, error) {
	t.init()
	t.mu.Lock()
	t.foreignDirect = true
	t.startForeign()
	t.mu.Unlock()
	for {
		if p, ok := t.foreign.pop(); ok {
			return copy(b, p.b), p.addr, nil
		}
		select {
		case <-t.foreign.wait():
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-t.done:
			return 0, nil, post.Errorf(post.ErrClosed, "fsp: transport closed")
		}
	}
}

// WriteTo sends a non-FSP datagram on the shared socket.
func (t *Transport) WriteTo(b []byte, addr net.Addr) (int, error) {
	return t.Conn.WriteTo(b, addr)
}

// writeBatch sends datagrams to one peer, in one system call where the
// platform allows (sendmmsg, and UDP GSO for runs of full packets).
func (t *Transport) writeBatch(bufs []*[]byte, to *peerAddr) {
	if t.sio == nil || !to.ap.IsValid() {
		for _, b := range bufs {
			t.write(*b, to)
		}
		return
	}
	pp := wpktsPool.Get().(*[]sockio.Packet)
	pk := (*pp)[:0]
	for _, b := range bufs {
		pk = append(pk, sockio.Packet{Buf: *b, N: len(*b), Addr: to.ap})
	}
	// Connections' loops send at once: WriteBatch needs no lock.
	if _, err := t.sio.WriteBatch(pk); err != nil && t.recvErr.Load() && isICMPError(err) {
		// The send took the ICMP error the read loop would have seen:
		// have it drain the error queue after its next read.
		t.icmpPending.Store(true)
	}
	clear(pk)
	*pp = pk[:0]
	wpktsPool.Put(pp)
}

// wpktsPool holds writeBatch's packet lists, so that a socket does not
// keep one as long as its largest batch.
var wpktsPool = sync.Pool{New: func() any { return new([]sockio.Packet) }}

func (t *Transport) write(b []byte, to *peerAddr) error {
	var err error
	if t.udp != nil && to.ap.IsValid() {
		_, err = t.udp.WriteToUDPAddrPort(b, to.ap)
	} else {
		_, err = t.Conn.WriteTo(b, to.addr)
	}
	return err
}

// Datagram buffers come in two sizes: most datagrams fit a small one
// (the allocator's 1,536-byte class, room for a full MaxDatagramSize
// packet), and those above it, on a path that carries more, a jumbo one
// (the 9,472-byte class, room for LargestDatagramSize).
const (
	smallBufSize = 1536
	jumboBufSize = 9472
)

var (
	bufPool      = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
	jumboBufPool = sync.Pool{New: func() any { b := make([]byte, jumboBufSize); return &b }}
)

// sockio lends datagrams of up to LargestDatagramSize bytes, and so
// every handshake datagram.
const (
	_ = uint(sockio.LendSize - LargestDatagramSize)
	_ = uint(sockio.LendSize - maxHandshakeSize)
	_ = uint(jumboBufSize - LargestDatagramSize - 128)
)

// getBuf returns a small pooled buffer, which holds MaxDatagramSize bytes.
func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

// getBufFor returns a pooled buffer of at least n bytes, n at most
// jumboBufSize.
func getBufFor(n int) *[]byte {
	if n <= smallBufSize {
		return bufPool.Get().(*[]byte)
	}
	return jumboBufPool.Get().(*[]byte)
}

// fits reports whether b is the size getBufFor(n) returns: large
// enough, and not a jumbo buffer for what a small one holds (that would
// hold six times the memory the window or the send buffer counts).
func fits(b *[]byte, n int) bool {
	return cap(*b) >= n && (n > smallBufSize || cap(*b) < jumboBufSize)
}

// putBuf returns b to the pool of its size. A nil b (an entry without a
// buffer, such as an abort marker) is ignored: the pool would hand it
// out again; so is a buffer smaller than a small one.
func putBuf(b *[]byte) {
	switch {
	case b == nil:
	case cap(*b) >= jumboBufSize:
		jumboBufPool.Put(b)
	case cap(*b) >= smallBufSize:
		bufPool.Put(b)
	}
}

func (t *Transport) readLoop() {
	defer close(t.loopEnd)
	if t.sio != nil {
		t.readBatches()
		return
	}
	buf := make([]byte, sockio.LendSize)
	var pkt wire.Packet
	for {
		t.runReadHook()
		var (
			n    int
			from peerAddr
			err  error
		)
		if t.udp != nil {
			var ap netip.AddrPort
			n, ap, err = t.udp.ReadFromUDPAddrPort(buf)
			from.ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		} else {
			var a net.Addr
			n, a, err = t.Conn.ReadFrom(buf)
			if err == nil {
				from = toPeerAddr(a)
			}
		}
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, net.ErrClosed) {
				continue
			}
			if errors.Is(err, net.ErrClosed) || errors.Is(err, post.ErrClosed) {
				go t.closeWith(post.Errorf(post.ErrClosed, "fsp: socket closed"))
				return
			}
			if isICMPError(err) {
				t.icmpErrors(err)
			}
			// Transient errors such as ICMP port unreachable: keep reading.
			continue
		}
		t.handle(buf[:n], &from, &pkt)
	}
}

// runReadHook runs the tests' readHook, if set.
func (t *Transport) runReadHook() {
	if h := t.readHook.Load(); h != nil {
		(*h)()
	}
}

// readBatches is the read loop over sockio: many datagrams per system
// call, each routed to its connection's loop (conn_loop.go).
func (t *Transport) readBatches() {
	n := t.sio.MaxBatch()
	t.mu.Lock()
	small := t.closeWhenIdle && t.listener == nil
	t.mu.Unlock()
	if small {
		n = min(n, 8) // a single-connection socket: keep it small
	}
	// The datagrams are lent by sockio (at most sockio.LendSize bytes
	// each), from space it holds only while busy.
	pkts := make([]sockio.Packet, n)
	var (
		pkt  wire.Packet
		from peerAddr
		rb   rxBatch
	)
	for {
		t.runReadHook()
		k, err := t.sio.LendBatch(pkts)
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, net.ErrClosed) {
				continue
			}
			if errors.Is(err, net.ErrClosed) || errors.Is(err, post.ErrClosed) {
				go t.closeWith(post.Errorf(post.ErrClosed, "fsp: socket closed"))
				return
			}
			if isICMPError(err) {
				t.icmpErrors(err)
			}
			continue
		}
		for i := range k {
			from = peerAddr{ap: pkts[i].Addr, dst: pkts[i].Dst}
			t.route(pkts[i].Buf[:pkts[i].N], &from, &pkt, &rb)
		}
		t.tuneRcvbuf(k, k-len(rb.pend))
		if len(rb.pend) > 0 {
			rb.hold = t.sio.Keep() // nil: connections copy them
		}
		rb.dispatch()
		pkt = wire.Packet{} // keep no lent datagram alive while idle
		if t.icmpPending.Load() {
			t.icmpErrors(nil)
		}
	}
}

// isICMPError reports whether a socket error is an ICMP error that
// IP_RECVERR delivers: port, host or network unreachable.
func isICMPError(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTDOWN)
}

// icmpErrors handles ICMP errors reported on an owned dialing socket (err
// from a read, or nil when a send saw them). A port unreachable fails the
// connections still in their handshake with post.ErrRefused; an
// established connection whose peer address the error names reports a
// SoftError, and fails once its peer stays silent through a few port
// unreachables (icmpRefused). The error queue is drained either way.
func (t *Transport) icmpErrors(err error) {
	if !t.recvErr.Load() {
		return
	}
	t.icmpPending.Store(false)
	queued := drainICMP(t.Conn)
	t.mu.Lock()
	var conns []*Conn
	for _, c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		switch {
		case c.state == stateInitiating || c.state == stateRequesting:
			if errors.Is(err, syscall.ECONNREFUSED) {
				c.failLocked(post.Errorf(post.ErrRefused, "fsp: port unreachable"))
			}
		case c.state == stateEstablished:
			for _, e := range queued {
				if (!e.dst.IsValid() || e.dst == c.remote.ap) && c.state == stateEstablished {
					c.icmpSoftError(e.errno)
				}
			}
		}
		c.mu.Unlock()
	}
}

// handle routes one datagram: foreign ones to ReadNonFSPPacket, handshake
// requests to the listener, the rest by destination ALFID to their
// connection's queue. It only parses the clear header.
func (t *Transport) handle(b []byte, from *peerAddr, pkt *wire.Packet) {
	t.route(b, from, pkt, nil)
}

// route is handle that, given a batch, collects the datagrams for
// connections there instead of queueing each at once.
func (t *Transport) route(b []byte, from *peerAddr, pkt *wire.Packet, rb *rxBatch) {
	if len(b) == 0 || b[0]&0xc0 != 0 || !wire.IsFSP(b) {
		t.queueForeign(b, from)
		return
	}
	if err := wire.Parse(b, pkt); err != nil {
		return // malformed: dropped silently
	}
	if pkt.Dst == 0 {
		t.handleListener(b, from, pkt)
		return
	}
	var c *Conn
	if rb != nil && rb.last != nil && rb.lastDst == pkt.Dst {
		c = rb.last // within a batch, as good as the map
	} else {
		t.mu.Lock()
		c = t.conns[pkt.Dst]
		t.mu.Unlock()
	}
	if c == nil {
		// A packet for a connection we do not know gets a RESET, unless
		// it asks for no answer: a bare acknowledgement (KEEP_ALIVE
		// without an acknowledgement request) or a RESET itself.
		ackReq := pkt.Opcode == wire.KeepAlive && pkt.Flags&wire.FlagAckRequest != 0
		if pkt.Opcode != wire.Reset && (pkt.Opcode != wire.KeepAlive || ackReq) && pkt.Opcode != wire.AckInitConnect {
			t.sendReset(from, pkt.Src, pkt.Dst, len(b))
		}
		return
	}
	// The connection's loop decrypts and processes it. In a batch it is
	// lent: enqueue keeps it in the socket's space or copies it.
	in := inPacket{lent: b, n: len(b), from: *from}
	if rb == nil {
		in.own(0) // b is the read loop's buffer
		c.enqueue([]routed{{c, in}}, nil)
		return
	}
	rb.last, rb.lastDst = c, pkt.Dst
	rb.pend = append(rb.pend, routed{c, in})
}

// handshakePacket builds a handshake packet tagged with the handshake key.
func handshakePacket(dst []byte, key []byte, p *wire.Packet, payload []byte) []byte {
	dst = wire.AppendHeader(dst, p)
	dst = append(dst, payload...)
	tag := fcrypto.HandshakeTag(key, dst)
	return append(dst, tag[:]...)
}

// resetLen is the size of an unauthenticated RESET.
const resetLen = wire.HeaderLen + fcrypto.TagLen

// sendReset refuses a packet of reqLen bytes to an unknown ALFID with an
// unauthenticated RESET: a stateless reset (reset_token.go) from a
// listener, when the packet is larger and the rate limits allow, else a
// plain one, which peers believe only while closing or connecting. It is
// never larger than the packet: shorter packets get no answer.
func (t *Transport) sendReset(to *peerAddr, dst, src uint32, reqLen int) {
	if dst == 0 || reqLen < resetLen {
		return
	}
	tagKey := func() []byte {
		var psk []byte
		t.mu.Lock()
		if t.listener != nil {
			psk = t.listener.cfg.Security.PSK
		}
		t.mu.Unlock()
		return fcrypto.HandshakeKey(psk, dst)
	}
	if t.statelessReset(to, src, dst, reqLen, tagKey) { // src is ours, dst the peer's
		return
	}
	t.writeReset(to, dst, src, tagKey())
}

// refuseHandshake answers an INIT_CONNECT or CONNECT_REQUEST of reqLen
// bytes, when no listener takes it, with a RESET tagged under
// RefusalKey(client nonce): only a party that saw the request can refuse
// a dial, and the answer is smaller than the request.
func (t *Transport) refuseHandshake(to *peerAddr, pkt *wire.Packet, reqLen int) {
	if len(pkt.Payload) < fcrypto.TagLen || reqLen < resetLen {
		return
	}
	body := pkt.Payload[:len(pkt.Payload)-fcrypto.TagLen]
	var nonce []byte
	switch {
	case pkt.Opcode == wire.InitConnect && len(body) == fcrypto.NonceLen:
		nonce = body
	case pkt.Opcode == wire.ConnectRequest && len(body) >= fcrypto.CookieLen+fcrypto.NonceLen:
		nonce = body[fcrypto.CookieLen : fcrypto.CookieLen+fcrypto.NonceLen]
	case pkt.Opcode == wire.Restore && len(body) > fcrypto.NonceLen:
		nonce = body[:fcrypto.NonceLen]
	default:
		return
	}
	t.writeReset(to, pkt.Src, 0, fcrypto.RefusalKey(nonce))
}

func (t *Transport) writeReset(to *peerAddr, dst, src uint32, key []byte) {
	p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: dst, Src: src}}
	var arr [resetLen]byte
	t.write(handshakePacket(arr[:0], key, &p, nil), to)
}

// newALFID registers c under a fresh random ALFID above the well-known
// range.
func (t *Transport) register(c *Conn) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return post.Errorf(post.ErrClosed, "fsp: transport closed")
	}
	for {
		var b [4]byte
		rand.Read(b[:])
		id := binary.BigEndian.Uint32(b[:])
		if id <= 0xffff {
			continue
		}
		if _, taken := t.conns[id]; !taken {
			c.local = id
			t.conns[id] = c
			t.joinPeer(c)
			return nil
		}
	}
}

// joinPeer counts c on its peer address's queue bound (an IPv6 /64 is
// one peer, as for every other per-address bound). Called with t.mu held,
// once, when c is registered.
func (t *Transport) joinPeer(c *Conn) {
	a := pendingHost(c.remote.ap.Addr())
	if !a.IsValid() {
		return // not a UDP address: the Transport's bound only
	}
	pq := t.peers[a]
	if pq == nil {
		if t.peers == nil {
			t.peers = make(map[netip.Addr]*peerQueue)
		}
		pq = &peerQueue{addr: a}
		t.peers[a] = pq
	}
	pq.conns++
	c.pq = pq
}

// leavePeer undoes joinPeer. The connection keeps its pointer: its loop
// may still give back charges.
func (t *Transport) leavePeer(c *Conn) {
	pq := c.pq
	if pq == nil {
		return
	}
	if pq.conns--; pq.conns == 0 && t.peers[pq.addr] == pq {
		delete(t.peers, pq.addr)
	}
}

func (t *Transport) unregister(c *Conn) {
	t.mu.Lock()
	if t.conns[c.local] == c {
		delete(t.conns, c.local)
		t.leavePeer(c)
	}
	t.pending.remove(c)
	if k := c.pendKey; k != (pendingKey{}) && t.responders[k] == c {
		delete(t.responders, k)
	}
	idle := t.closeWhenIdle && len(t.conns) == 0 && t.listener == nil && t.foreignUsers == 0
	t.mu.Unlock()
	if idle {
		go t.closeWith(post.Errorf(post.ErrClosed, "fsp: transport closed"))
	}
}

// Dial opens a connection to addr over the transport.
func (t *Transport) Dial(ctx context.Context, addr net.Addr, cfg *Config) (*Conn, error) {
	if t.Conn == nil {
		return nil, errors.New("fsp: Transport.Conn is nil")
	}
	t.init()
	c := newConn(t, cfg.clone(), true, toPeerAddr(addr))
	if err := t.register(c); err != nil {
		return nil, err
	}
	if err := c.dial(ctx); err != nil {
		return nil, &post.OpError{Op: "dial", Stack: "fsp", Path: addr.String(), Err: err}
	}
	return c, nil
}

// Dial opens a connection to addr over a new UDP socket, which is closed
// with the connection.
func Dial(ctx context.Context, addr netip.AddrPort, cfg *Config) (*Conn, error) {
	return dialUDP(ctx, netip.AddrPort{}, addr, cfg)
}

func dialUDP(ctx context.Context, local, addr netip.AddrPort, cfg *Config) (*Conn, error) {
	network := "udp4"
	laddr := &net.UDPAddr{IP: net.IPv4zero}
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network, laddr = "udp6", &net.UDPAddr{IP: net.IPv6unspecified}
	}
	if local.IsValid() {
		laddr = net.UDPAddrFromAddrPort(local)
	}
	pc, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, &post.OpError{Op: "dial", Stack: "fsp", Path: addr.String(), Err: sockerr.Bind(err)}
	}
	t := &Transport{Conn: pc, owned: true, closeWhenIdle: true}
	if cfg != nil {
		t.Logger = cfg.Logger
	}
	// Report ICMP errors during the handshake, so a closed port refuses
	// the dial at once.
	if setRecvErr(pc, true) {
		t.recvErr.Store(true)
	}
	c, err := t.Dial(ctx, net.UDPAddrFromAddrPort(addr), cfg)
	if err != nil {
		if t.recvErr.Swap(false) {
			setRecvErr(pc, false)
		}
		t.Close()
		return nil, err
	}
	return c, nil
}

// Listen listens for FSP connections on a new UDP socket at addr.
// Closing the Listener closes the socket and its connections.
func Listen(addr netip.AddrPort, cfg *Config) (*Listener, error) {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, &post.OpError{Op: "listen", Stack: "fsp", Path: addr.String(), Err: sockerr.Bind(err)}
	}
	t := &Transport{Conn: pc, owned: true}
	if cfg != nil {
		t.Logger = cfg.Logger
	}
	l, err := t.Listen(cfg)
	if err != nil {
		pc.Close()
		return nil, err
	}
	l.ownsTransport = true
	return l, nil
}

// Listen accepts connections on the transport. A transport has at most
// one listener.
func (t *Transport) Listen(cfg *Config) (*Listener, error) {
	if t.Conn == nil {
		return nil, errors.New("fsp: Transport.Conn is nil")
	}
	cfg = cfg.clone()
	id, err := identity(cfg)
	if err != nil {
		return nil, &post.OpError{Op: "listen", Stack: "fsp", Err: err}
	}
	l := &Listener{t: t, cfg: cfg, id: id, accept: acceptQueue{ready: make(chan struct{}, 1)}, bud: newBudget(cfg.memoryBudget()),
		conns: hsrate.NewConns(cfg.maxConnsPerSource()), done: make(chan struct{})}
	if psk := cfg.Security.PSK; len(psk) > 0 {
		c, err := psi.PSKCertificate(psk)
		if err != nil {
			return nil, &post.OpError{Op: "listen", Stack: "fsp", Err: fmt.Errorf("%w: %v", post.ErrAuthentication, err)}
		}
		l.pskLeaf = c.Leaf
	}
	l.chainLen = chainLen(id)
	l.idDigest = identityDigest(id.Certificate)
	l.strikes, l.earlyTickets = newStrikes(), newStrikes()
	if l.chainLen > maxListenerChain {
		return nil, &post.OpError{Op: "listen", Stack: "fsp", Err: post.Errorf(post.ErrNotSupported, "fsp: certificate chain of %d bytes does not fit a handshake packet", l.chainLen)}
	}
	// The listener is in place before the read loop starts, so that a
	// handshake already queued on Conn is answered, not refused.
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return nil, post.Errorf(post.ErrClosed, "fsp: transport closed")
	case t.listener != nil:
		t.mu.Unlock()
		return nil, errors.New("fsp: transport already has a listener")
	}
	t.listener = l
	t.mu.Unlock()
	t.reset.Store(newResetKeys(id, t.Conn.LocalAddr()))
	t.init()
	return l, nil
}

// PendingHandshakes returns the number of responder connections that
// passed the cookie check but are not yet confirmed. The listener keeps no
// other per-peer state; see Config.MaxPending for its bounds.
func (t *Transport) PendingHandshakes() int {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending.len()
}

// NumConns returns the number of connections registered on the transport.
func (t *Transport) NumConns() int {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// NonFSPConn returns a net.PacketConn that reads the datagrams FSP does
// not claim and writes through the shared socket, so another protocol
// (quic-go's Transport, for one) can run on the same port.
//
// Each handle holds the transport open until closed; closing it does not
// close a socket that other users still need.
func (t *Transport) NonFSPConn() net.PacketConn {
	t.init()
	t.mu.Lock()
	t.foreignUsers++
	t.startForeign()
	t.mu.Unlock()
	return &foreignConn{t: t}
}

type foreignConn struct {
	t        *Transport
	once     sync.Once
	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed when the deadline changes
}

func (f *foreignConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		f.mu.Lock()
		d := f.deadline
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		changed := f.changed
		f.mu.Unlock()
		var expired <-chan time.Time
		if !d.IsZero() {
			wait := time.Until(d)
			if wait <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			tm := time.NewTimer(wait)
			defer tm.Stop()
			expired = tm.C
		}
		if p, ok := f.t.foreign.pop(); ok {
			return copy(b, p.b), p.addr, nil
		}
		select {
		case <-f.t.foreign.wait():
		case <-f.t.done:
			return 0, nil, net.ErrClosed
		case <-expired:
			return 0, nil, os.ErrDeadlineExceeded
		case <-changed:
		}
	}
}

func (f *foreignConn) WriteTo(b []byte, addr net.Addr) (int, error) { return f.t.WriteTo(b, addr) }
func (f *foreignConn) LocalAddr() net.Addr                          { return f.t.LocalAddr() }

// Close releases this handle; the shared socket closes once the transport
// is idle and closing was asked for.
func (f *foreignConn) Close() error {
	f.once.Do(func() {
		t := f.t
		t.mu.Lock()
		t.foreignUsers--
		idle := t.closeWhenIdle && len(t.conns) == 0 && t.listener == nil && t.foreignUsers == 0
		unread := t.foreignUsers == 0 && !t.foreignDirect
		if unread {
			t.foreignOn.Store(false)
		}
		t.mu.Unlock()
		if unread {
			t.foreign.drain()
		}
		if idle {
			go t.closeWith(post.Errorf(post.ErrClosed, "fsp: transport closed"))
		}
	})
	return nil
}

func (f *foreignConn) SetDeadline(t time.Time) error { return f.SetReadDeadline(t) }
func (f *foreignConn) SetReadDeadline(t time.Time) error {
	f.mu.Lock()
	f.deadline = t
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
	f.mu.Unlock()
	return nil
}
func (f *foreignConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer and SetWriteBuffer size the shared socket's buffers.
func (f *foreignConn) SetReadBuffer(n int) error {
	if f.t.udp != nil {
		return f.t.udp.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer sizes the shared socket's send buffer.
func (f *foreignConn) SetWriteBuffer(n int) error {
	if f.t.udp != nil {
		return f.t.udp.SetWriteBuffer(n)
	}
	return nil
}
