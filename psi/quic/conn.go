package quic

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/srcaddr"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

const (
	// maxPending bounds datagrams held for streams not yet seen; a
	// listener's are charged to its receive budget too.
	maxPending = 64
	// maxStreamID is the largest QUIC stream ID.
	maxStreamID = 1<<62 - 1
)

// conn is one QUIC connection shared by a root transient and its forks.
type conn struct {
	qc     *quicgo.Conn
	tr     *transport
	cfg    *psi.Config
	log    *slog.Logger
	server bool
	// onRoot hands a server's root transient to its listener; it reports
	// whether the listener took it.
	onRoot func(*Transient) bool

	// early is set on a dialled connection returned before its handshake
	// completed, which sends 0-RTT data. recovered is closed once the
	// handshake is done and, if the server rejected 0-RTT, every stream
	// has been reopened and its data sent again.
	early     bool
	recovered chan struct{}
	// hsEnd is closed when the handshake completed or failed (quic-go's
	// HandshakeComplete only when it completed); hsErr, set before, is
	// why it failed.
	hsEnd chan struct{}
	hsErr error
	// rootDone, if set, is called once when the server's root transient
	// was handed over or the connection ended without one.
	rootDone func()
	rootOnce sync.Once
	// ticket, on a dialled connection whose Association keeps session
	// tickets, is closed when the server's first ticket arrived.
	ticket <-chan struct{}
	// src finds the local address a client bound to the unspecified
	// address sends from (Transient.Path).
	src srcaddr.Cache

	mu       sync.Mutex
	wg       sync.WaitGroup // goroutines started with spawn
	exiting  bool           // the connection is gone; spawn runs inline
	ts       map[quicgo.StreamID]*Transient
	live     int // transients not yet closed and drained
	gotRoot  bool
	inflight map[quicgo.StreamID]struct{} // accepted streams whose header is unread
	settled  *sync.Cond                   // signalled when an inflight stream is settled
	replayed bool                         // the 0-RTT outcome is known; new streams are not replayed
	pending  map[quicgo.StreamID][][]byte // datagrams for streams not yet accepted
	npending int
	accepted quicgo.StreamID // highest stream ID the peer opened, -1 if none
	ended    bool            // every transient of ours is released
	peerDone bool            // the peer said every transient of its is released
	hooks    *connHooks      // quic-go's per-connection hooks; nil on a transport we did not set up
	// acct is the listener's receive-budget account of a server
	// connection, nil when none (see budget).
	acct *account
	// timer drops a server connection that sends no root stream, and
	// later one whose transients are all closed (see release).
	timer *time.Timer
}

// newConn wraps qc and starts its stream and datagram loops. The
// connection holds one reference to tr, released when qc is closed.
func newConn(qc *quicgo.Conn, tr *transport, cfg *psi.Config, server bool, onRoot func(*Transient) bool, rootDone func(), acct *account) *conn {
	c := &conn{
		qc:        qc,
		acct:      acct,
		tr:        tr,
		cfg:       cfg,
		log:       cfg.Log().With("stack", Name, "remote", qc.RemoteAddr().String()),
		server:    server,
		onRoot:    onRoot,
		rootDone:  rootDone,
		recovered: make(chan struct{}),
		ts:        make(map[quicgo.StreamID]*Transient),
		inflight:  make(map[quicgo.StreamID]struct{}),
		pending:   make(map[quicgo.StreamID][][]byte),
		accepted:  -1,
		hooks:     hooksOf(qc.Context()),
	}
	if acct != nil {
		acct.frames.bind(qc)
	}
	c.settled = sync.NewCond(&c.mu)
	c.hsEnd = make(chan struct{})
	select {
	case <-qc.HandshakeComplete():
		close(c.hsEnd)
		if !server && !qc.ConnectionState().Used0RTT {
			// A 0-RTT attempt rejected before we got here leaves quic-go
			// refusing streams until NextConnection; without one,
			// NextConnection does nothing. The handshake is complete,
			// so it returns at once.
			_, _ = qc.NextConnection(qc.Context())
		}
	default:
		c.early = !server
		c.spawn(c.watchHandshake)
	}
	if c.early {
		c.spawn(c.watchEarly)
	} else {
		c.replayed = true
		close(c.recovered)
	}
	if server {
		// A client that never opens its root stream is dropped.
		c.timer = time.AfterFunc(cfg.Handshake(), func() {
			c.mu.Lock()
			got := c.gotRoot
			c.mu.Unlock()
			if !got {
				c.abort(codeRefused, "no root stream")
			}
		})
	}
	c.spawn(c.acceptStreams)
	c.spawn(c.acceptDone)
	c.spawn(c.receiveDatagrams)
	go c.supervise()
	return c
}

// supervise waits for the connection to end, then for every goroutine the
// connection started, and releases the transport.
func (c *conn) supervise() {
	<-c.qc.Context().Done()
	c.mu.Lock()
	c.exiting = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.settled.Broadcast()
	c.mu.Unlock()
	c.wg.Wait()
	c.finishRoot()
	c.tr.release()
}

func (c *conn) finishRoot() {
	if c.rootDone != nil {
		c.rootOnce.Do(c.rootDone)
	}
}

// settled0RTT reports whether the 0-RTT outcome is settled. Until then
// datagrams go on the stream: SendDatagram reads the server's transport
// parameters, which quic-go installs without a lock (quic-go#4303).
func (c *conn) settled0RTT() bool {
	select {
	case <-c.recovered:
		return true
	default:
		return false
	}
}

// waitRecovered waits until the 0-RTT outcome is settled; see recovered.
func (c *conn) waitRecovered(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-c.recovered:
		return nil
	default:
	}
	select {
	case <-c.recovered:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return post.ErrClosed
	case <-c.qc.Context().Done():
		return mapError(context.Cause(c.qc.Context()))
	}
}

// watchHandshake closes hsEnd when the handshake completes or the
// connection ends before it did.
func (c *conn) watchHandshake() {
	select {
	case <-c.qc.HandshakeComplete():
	case <-c.qc.Context().Done():
		select {
		case <-c.qc.HandshakeComplete():
		default:
			c.hsErr = mapError(context.Cause(c.qc.Context()))
			if c.hsErr == nil {
				c.hsErr = post.ErrClosed
			}
		}
	}
	close(c.hsEnd)
}

// watchEarly settles a 0-RTT connection. If the server rejected the 0-RTT
// data, quic-go has discarded every stream opened so far; they are opened
// again in their original order, each with its header and the messages
// written in 0-RTT, so no data is lost.
func (c *conn) watchEarly() {
	select {
	case <-c.qc.HandshakeComplete():
	case <-c.qc.Context().Done():
		return
	}
	if c.qc.Context().Err() != nil {
		return
	}
	rejected := !c.qc.ConnectionState().Used0RTT
	if rejected {
		c.log.Debug("0-RTT rejected; replaying streams")
		if _, err := c.qc.NextConnection(c.qc.Context()); err != nil {
			return
		}
	}
	c.mu.Lock()
	c.replayed = true
	list := make([]*Transient, 0, len(c.ts))
	for _, t := range c.ts {
		list = append(list, t)
	}
	c.mu.Unlock()
	slices.SortFunc(list, func(a, b *Transient) int { return cmp.Compare(a.streamID(), b.streamID()) })
	remap := make(map[uint64]uint64)
	for _, t := range list {
		t.replay(rejected, remap)
	}
	close(c.recovered)
}

// spawn runs f on a goroutine that supervise waits for. Once the
// connection is gone f runs inline, since it then returns at once.
func (c *conn) spawn(f func()) {
	c.mu.Lock()
	if c.exiting {
		c.mu.Unlock()
		f()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// endWait bounds how long the last Close waits for the peer to hear our
// end, at least; see awaitEnd.
const endWait = 500 * time.Millisecond

// awaitEnd is called by the Close of a transient whose peer had ended its
// side first: the peer waits for our end (the stream's FIN) as its
// confirmation, but quic-go sends it after Close returns, and a program
// that exits at once would cut it off. If every transient of ours is
// released, it waits until the connection ends (the peer says it
// released its own) or at most max(10 RTT, endWait), or ctx ends.
func (c *conn) awaitEnd(ctx context.Context) {
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if !ended {
		return
	}
	tm := time.NewTimer(max(10*c.qc.ConnectionStats().SmoothedRTT, endWait))
	defer tm.Stop()
	select {
	case <-c.qc.Context().Done():
	case <-tm.C:
	case <-ctx.Done():
	}
}

// awaitTicket waits, before a client's close, for the server's session
// ticket if none came yet: after a 0-RTT exchange the reply and the
// peer's close arrive a round trip before it, and a connection closed
// then would leave the Association only a ticket already used, which the
// listener's anti-replay refuses. A listener of this stack sends one once
// it accepted the client (clientAuth), so the wait ends with it unless
// the connection ends first; four round trips, at least ticketWait,
// bound it for a server that sends none.
func (c *conn) awaitTicket(ctx context.Context) {
	if c.ticket == nil {
		return
	}
	select {
	case <-c.ticket:
		return
	default:
	}
	tm := time.NewTimer(max(4*c.qc.ConnectionStats().SmoothedRTT, ticketWait))
	defer tm.Stop()
	select {
	case <-c.ticket:
	case <-c.qc.Context().Done():
	case <-tm.C:
	case <-ctx.Done():
	}
}

// ticketWait is the least awaitTicket waits. The ticket leaves when the
// server has processed the client's Finished, which a loaded host delays
// by more than four 20 ms round trips (the bound was 20 ms, and carrier
// TestZeroRTTChain lost its 0-RTT then).
const ticketWait = time.Second

// abort closes the connection at once.
func (c *conn) abort(code quicgo.ApplicationErrorCode, msg string) {
	_ = c.qc.CloseWithError(code, msg)
}

// openRoot opens the dialler's root stream.
func (c *conn) openRoot(ctx context.Context, assoc [16]byte) (*Transient, error) {
	return c.openTransient(ctx, header{kind: kindRoot, association: assoc}, nil, assoc, psi.Wine)
}

// maxReplay bounds the 0-RTT data kept per stream for a replay; messages
// beyond it wait for the handshake.
const maxReplay = 256 << 10

// openTransient opens a stream, sends its header and registers it. While
// the 0-RTT outcome is open, the root stream is recorded for a replay.
// Forks wait for the handshake instead: opening a stream while quic-go
// installs the server's transport parameters is a data race in quic-go
// (quic-go/quic-go#4303); the root is opened right after the dial, before
// the server's reply is handled, or after the handshake (paramsGate).
func (c *conn) openTransient(ctx context.Context, hdr header, parent *Transient, assoc [16]byte, class psi.TrafficClass) (*Transient, error) {
	for {
		c.mu.Lock()
		if !c.replayed && parent == nil {
			g := c.paramsGate()
			g.mu.Lock()
			if g.arrived {
				// The server's reply is being handled: open the root
				// once the handshake is complete (early.go).
				g.mu.Unlock()
				c.mu.Unlock()
				if err := c.waitRecovered(ctx, nil); err != nil {
					return nil, err
				}
				continue
			}
			s, err := c.qc.OpenStream()
			g.mu.Unlock()
			if err != nil {
				c.mu.Unlock()
				if errors.Is(err, quicgo.Err0RTTRejected) {
					if err := c.waitRecovered(ctx, nil); err != nil {
						return nil, err
					}
					continue
				}
				return nil, mapError(err)
			}
			c.acct.openedStream(s.StreamID())
			if parent != nil {
				hdr.parent = uint64(parent.streamID())
			}
			t := newTransient(c, s, hdr, assoc, class)
			t.replayOn = true
			dq := c.registerLocked(t)
			c.mu.Unlock()
			c.givePending(dq)
			// Small writes are queued without blocking. If 0-RTT is
			// rejected, the header is sent again with the replay.
			if _, err := s.Write(appendHeader(nil, hdr)); err != nil && !errors.Is(err, quicgo.Err0RTTRejected) {
				t.abort(codeClosed)
				return nil, mapError(err)
			}
			for _, d := range dq {
				t.pushDatagram(d)
			}
			return t, nil
		}
		c.mu.Unlock()
		if err := c.waitRecovered(ctx, nil); err != nil {
			return nil, err
		}
		s, err := c.qc.OpenStreamSync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, mapError(err)
		}
		c.acct.openedStream(s.StreamID())
		if parent != nil {
			// The parent may have moved in a replay.
			hdr.parent = uint64(parent.streamID())
		}
		if _, err := s.Write(appendHeader(nil, hdr)); err != nil {
			s.CancelWrite(codeClosed)
			c.acct.cancelRead(s, codeClosed)
			return nil, mapError(err)
		}
		t := newTransient(c, s, hdr, assoc, class)
		c.register(t)
		return t, nil
	}
}

// paramsGate returns the gate between the root stream and the server's
// transport parameters (early.go).
func (c *conn) paramsGate() *paramsGate {
	if c.hooks == nil {
		return new(paramsGate) // not dialled early: never marked
	}
	return &c.hooks.gate
}

// register adds t to the connection's transients and hands it any
// datagrams that arrived before its stream did.
func (c *conn) register(t *Transient) {
	c.mu.Lock()
	dq := c.registerLocked(t)
	c.mu.Unlock()
	c.givePending(dq) // pushDatagram charges them again
	for _, d := range dq {
		t.pushDatagram(d)
	}
}

func (c *conn) registerLocked(t *Transient) [][]byte {
	id := t.streamID()
	c.ts[id] = t
	c.live++
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	dq := c.pending[id]
	if dq != nil {
		delete(c.pending, id)
		c.npending -= len(dq)
	}
	return dq
}

// givePending gives back the charge of datagrams held for a stream not
// yet seen (receiveDatagrams).
func (c *conn) givePending(dq [][]byte) {
	for _, d := range dq {
		c.acct.give(datagramCost(d))
	}
}

// rekey moves t from stream old to its new stream after a 0-RTT replay.
func (c *conn) rekey(t *Transient, old quicgo.StreamID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ts[old] == t {
		delete(c.ts, old)
		c.ts[t.streamID()] = t
	}
}

// release drops t. Once no transient is left, the connection tells the
// peer so on a unidirectional stream, and closes once the peer has said
// the same: closing earlier would discard what the peer's stack holds
// unread. Without word from the peer it closes after the idle timeout.
// A last transient ended by Abort closes the connection with an error
// code a few round trips later, once its stream resets have had time to
// arrive.
func (c *conn) release(t *Transient) {
	id := t.streamID()
	c.mu.Lock()
	if c.ts[id] == t {
		delete(c.ts, id)
	}
	c.live--
	last := c.live == 0
	if t.wasAborted() && last && !c.exiting {
		// Give the stream resets a few round trips to arrive, lost
		// packets included, before the connection close cuts them off.
		c.ended = true
		if c.timer != nil {
			c.timer.Stop()
		}
		grace := min(max(4*c.qc.ConnectionStats().SmoothedRTT, 200*time.Millisecond), 2*time.Second)
		c.timer = time.AfterFunc(grace, func() { c.abort(codeAborted, "") })
		c.mu.Unlock()
		return
	}
	both := false
	if last && !c.exiting {
		c.ended = true
		both = c.peerDone
		if c.timer != nil {
			c.timer.Stop()
		}
		c.timer = time.AfterFunc(c.cfg.Idle(), func() { c.abort(codeNoError, "") })
	}
	c.mu.Unlock()
	switch {
	case both:
		c.abort(codeNoError, "")
	case last:
		c.spawn(c.sendDone)
	}
}

// sendDone tells the peer that every transient of ours is released.
func (c *conn) sendDone() {
	ctx, cancel := context.WithTimeout(c.qc.Context(), c.cfg.Handshake())
	defer cancel()
	if c.waitRecovered(ctx, nil) != nil {
		return
	}
	s, err := c.qc.OpenUniStreamSync(ctx)
	if err != nil {
		return
	}
	_, _ = s.Write([]byte{doneByte})
	_ = s.Close()
}

// doneByte is the content of the "done" stream.
const doneByte = 0xD0

// acceptDone waits for the peer's "done" stream and closes the
// connection if ours are all released too.
func (c *conn) acceptDone() {
	s, err := c.qc.AcceptUniStream(c.qc.Context())
	if err != nil {
		return
	}
	c.acct.openedStream(s.StreamID())
	var b [1]byte
	_ = s.SetReadDeadline(time.Now().Add(c.cfg.Handshake()))
	_, err = io.ReadFull(acctReader{s, c.acct}, b[:])
	c.acct.cancelRead(s, codeNoError)
	if err != nil || b[0] != doneByte {
		c.log.Debug("bad done stream", "err", err)
		return
	}
	c.mu.Lock()
	c.peerDone = true
	both := c.ended
	c.mu.Unlock()
	if both {
		c.abort(codeNoError, "")
	}
}

// parent returns the live transient that stream child names as its
// parent. A parent the peer opened earlier may still have its header in
// flight (streams are handled concurrently): wait for it. Parents opened
// later are never waited for, so forks cannot wait on each other.
func (c *conn) parent(child quicgo.StreamID, id uint64) *Transient {
	if id > maxStreamID {
		return nil
	}
	pid := quicgo.StreamID(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if p := c.ts[pid]; p != nil {
			return p
		}
		if _, ok := c.inflight[pid]; !ok || pid >= child || c.exiting {
			return nil
		}
		c.settled.Wait()
	}
}

// acceptStreams takes the streams the peer opens.
func (c *conn) acceptStreams() {
	for {
		s, err := c.qc.AcceptStream(c.qc.Context())
		if errors.Is(err, quicgo.Err0RTTRejected) {
			if c.waitRecovered(c.qc.Context(), nil) != nil {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		c.acct.openedStream(s.StreamID())
		c.mu.Lock()
		c.inflight[s.StreamID()] = struct{}{}
		c.accepted = max(c.accepted, s.StreamID())
		c.mu.Unlock()
		c.spawn(func() { c.handleStream(s) })
	}
}

// handleStream reads a new stream's header and hands the stream to the
// listener or to the parent transient.
func (c *conn) handleStream(s *quicgo.Stream) {
	settle := sync.OnceFunc(func() {
		c.mu.Lock()
		delete(c.inflight, s.StreamID())
		dq := c.pending[s.StreamID()]
		if dq != nil {
			// Refused: its early datagrams go too.
			delete(c.pending, s.StreamID())
			c.npending -= len(dq)
		}
		c.settled.Broadcast()
		c.mu.Unlock()
		c.givePending(dq)
	})
	defer settle()
	// Every stream but the first (the root, one a connection, which
	// comes with the connection's window) is charged to the listener's
	// budget from here, while its header is awaited too: a stream that
	// never sends one holds a goroutine and its state until the
	// handshake timeout. A fork's transient takes the charge over.
	charged := false
	if c.acct != nil && s.StreamID() != 0 {
		if !c.acct.takeStream() {
			c.log.Debug("stream refused: receive budget full", "stream", s.StreamID())
			c.acct.cancelRead(s, codeRefused)
			s.CancelWrite(codeRefused)
			return
		}
		charged = true
		defer func() {
			if charged {
				c.acct.giveStream()
			}
		}()
	}
	_ = s.SetReadDeadline(time.Now().Add(c.cfg.Handshake()))
	h, err := readHeader(acctReader{s, c.acct})
	_ = s.SetReadDeadline(time.Time{})
	if err != nil {
		c.log.Debug("bad stream header", "stream", s.StreamID(), "err", err)
		// A header that did not come in time (a starved or silent
		// peer) is refused, not called malformed.
		code := quicgo.StreamErrorCode(codeRefused)
		if errors.Is(err, post.ErrMalformed) {
			code = codeMalformed
		}
		c.acct.cancelRead(s, code)
		s.CancelWrite(code)
		return
	}
	switch h.kind {
	case kindRoot:
		c.mu.Lock()
		ok := c.server && !c.gotRoot
		c.gotRoot = true
		c.mu.Unlock()
		if !ok {
			c.acct.cancelRead(s, codeRefused)
			s.CancelWrite(codeRefused)
			return
		}
		t := newTransient(c, s, h, h.association, psi.Wine)
		c.register(t)
		settle()
		if !c.qc.ConnectionState().Used0RTT {
			// Without 0-RTT the client's data follows its handshake, so
			// waiting costs nothing and the client is authenticated
			// before Accept returns.
			select {
			case <-c.qc.HandshakeComplete():
			case <-c.qc.Context().Done():
			}
			if c.qc.Context().Err() != nil {
				t.abort(codeRefused)
				c.finishRoot()
				return
			}
		}
		ok = c.onRoot(t)
		c.finishRoot()
		if !ok {
			t.abort(codeRefused)
			c.abort(codeRefused, "listener closed")
		}
	case kindFork:
		p := c.parent(s.StreamID(), h.parent)
		if p == nil || c.cfg.Disabled.Has(psi.Fork) {
			c.acct.cancelRead(s, codeRefused)
			s.CancelWrite(codeRefused)
			return
		}
		t := newTransient(c, s, h, p.assoc, h.class)
		t.charged, charged = charged, false
		c.register(t)
		settle()
		if !p.pushFork(t) {
			t.abort(codeRefused)
		}
	}
}

// peerStream reports whether id is a bidirectional stream the peer opens.
func (c *conn) peerStream(id quicgo.StreamID) bool {
	clientOpened := id&1 == 0
	return id&2 == 0 && clientOpened == c.server
}

// receiveDatagrams hands each datagram to the transient it names.
func (c *conn) receiveDatagrams() {
	for {
		b, err := c.qc.ReceiveDatagram(c.qc.Context())
		if err != nil {
			return
		}
		id, msg, err := parseDatagram(b)
		if err != nil || id > maxStreamID || int64(len(msg)) > c.cfg.Limit() {
			c.log.Debug("dropped bad datagram", "len", len(b))
			continue
		}
		sid := quicgo.StreamID(id)
		c.mu.Lock()
		t := c.ts[sid]
		if t == nil {
			// A stream the peer has not opened yet may still be on its
			// way; datagrams for any other are dropped.
			_, inflight := c.inflight[sid]
			// A listener's are charged to its budget, and dropped
			// without room: 64 a connection were up to 90 KiB each
			// outside it. (The budget's lock is taken last everywhere.)
			if c.peerStream(sid) && (sid > c.accepted || inflight) && c.npending < maxPending &&
				c.acct.takeDatagram(datagramCost(msg)) {
				c.pending[sid] = append(c.pending[sid], msg)
				c.npending++
			}
			c.mu.Unlock()
			continue
		}
		c.mu.Unlock()
		t.pushDatagram(msg)
	}
}
