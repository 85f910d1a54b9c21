package quic

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// readBuffer is the read buffer of a transient; reads at least this large
// bypass it. A listener's transient without room for it in the receive
// budget gets minReadBuffer instead (see bufferSize).
const (
	readBuffer    = 16 << 10
	minReadBuffer = 512
)

// maxDatagramQueue bounds the datagrams waiting to be read on one
// transient; when it is full the oldest is dropped.
const maxDatagramQueue = 256

// Stats counts a transient's datagram traffic.
type Stats struct {
	DatagramsSent     uint64 // messages sent as QUIC datagrams
	DatagramsReceived uint64 // datagrams received for this transient
	DatagramsDropped  uint64 // received datagrams dropped unread (queue full)
}

// Transient is one QUIC stream carrying messages, on a connection shared
// with its forks. It implements psi.Transient.
type Transient struct {
	c     *conn
	hdr   header // as sent at open, for a 0-RTT replay
	assoc [16]byte
	class psi.TrafficClass

	// Read side, guarded by rmu.
	rmu     sync.Mutex
	rs      *quicgo.Stream // stream br reads from
	br      *bufio.Reader
	rc      atomic.Pointer[countReader] // of the newest stream; see countReader
	fr      framer.MessageReader
	inMsg   bool   // inside a stream message
	dcur    []byte // rest of the datagram being read
	dActive bool   // a datagram is being read
	rerr    error  // sticky read error

	// Write side, guarded by wmu.
	wmu    sync.Mutex
	ws     *quicgo.Stream // stream fw writes to
	fw     framer.MessageWriter
	wInMsg bool  // inside a stream message
	werr   error // sticky write error

	mu        sync.Mutex
	s         *quicgo.Stream // current stream; replaced by a 0-RTT replay
	id        quicgo.StreamID
	replayOn  bool   // 0-RTT data is recorded in replayBuf
	replayBuf []byte // framed messages sent as 0-RTT data
	closed    bool
	released  bool
	aborted   bool          // ended by Abort: the last transient closes the connection with codeAborted
	peerDone  bool          // the peer ended its side: writes are cut
	closing   chan struct{} // closed when CloseContext has its result
	closeErr  error
	waiting   bool // a reader waits for stream data at a message boundary
	dq        [][]byte
	forks     []*Transient
	forkSig   chan struct{}
	done      chan struct{}
	stats     Stats
	// charged: a fork the listener charged to its connection's budget
	// account (account.takeStream), given back on release; bufCharged
	// the same for its read buffer (takeBuffer).
	charged, bufCharged bool
	// endedFirst: the peer had ended its side when Close came to wait
	// for it, so our end is what the peer waits for. Close's goroutine
	// only.
	endedFirst bool
}

var (
	_ psi.Transient      = (*Transient)(nil)
	_ psi.ContextCloser  = (*Transient)(nil)
	_ psi.Aborter        = (*Transient)(nil)
	_ psi.MessageAborter = (*Transient)(nil)
)

func newTransient(c *conn, s *quicgo.Stream, hdr header, assoc [16]byte, class psi.TrafficClass) *Transient {
	t := &Transient{
		c:       c,
		hdr:     hdr,
		s:       s,
		id:      s.StreamID(),
		assoc:   assoc,
		class:   class,
		forkSig: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	t.setReader(s)
	t.setWriter(s)
	t.watchEnd(s) // last: confirmEnd may run at once
	return t
}

// watchEnd confirms the peer's end of stream s once all of s has arrived,
// whether or not it has been read: see confirmEnd.
func (t *Transient) watchEnd(s *quicgo.Stream) {
	cr := t.countReader(s)
	s.SetReceiveFinalSizeCallback(func(size int64) {
		// Called from quic-go's event loop, which must not block.
		go t.confirmEnd(cr, size)
	})
}

// confirmEnd waits until every byte of cr's stream up to its final size
// has arrived, keeps what is unread (so that it outlives the connection),
// then ends our side of the stream. The peer's Close waits for that end
// as the confirmation that its data was delivered; QUIC does not tell the
// application when its stream data is acknowledged.
func (t *Transient) confirmEnd(cr *countReader, size int64) {
	s := cr.s
	// Peeking past the end returns io.EOF once everything is there.
	// What the peer can send beyond what was read is bounded by flow
	// control, and so is this buffer. On a listener it is charged to the
	// receive budget, as quic-go's copy of the same bytes is (in the
	// window), and without room it is not made: the peer's close is then
	// confirmed when the reader reaches the end (fail).
	n := max(size-cr.n.Load(), 0) + 1
	if !cr.acct.takeKept(n) {
		return
	}
	buf := make([]byte, n)
	for {
		_, err := s.Peek(buf)
		if err == io.EOF {
			err = cr.keepRest(buf) // on io.EOF cr owns the charge
		}
		switch {
		case err == io.EOF:
			t.peerClosed()
			return
		case err == nil || t.isClosed():
			cr.acct.giveKept(n)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A deadline set to wake a reader; look again once it
			// is cleared.
			time.Sleep(10 * time.Millisecond)
		default:
			cr.acct.giveKept(n)
			return // reset, or the connection is gone
		}
	}
}

// countReader returns the countReader of s, shared by the reader and
// confirmEnd; in a 0-RTT replay watchEnd sees the new stream first.
func (t *Transient) countReader(s *quicgo.Stream) *countReader {
	for {
		old := t.rc.Load()
		if old != nil && old.s == s {
			return old
		}
		if cr := newCountReader(s, t.c.acct); t.rc.CompareAndSwap(old, cr) {
			return cr
		}
	}
}

// setReader moves the read side to stream s; its buffer is made by the
// first read (reader).
func (t *Transient) setReader(s *quicgo.Stream) {
	t.rs = s
	t.countReader(s)
	t.br, t.fr = nil, nil
	t.inMsg, t.rerr = false, nil
}

// reader returns the read buffer of the current stream, made on the
// first read, so that a transient never read (a fork not accepted, or
// accepted and left unread) holds no readBuffer. Called with rmu held.
func (t *Transient) reader() *bufio.Reader {
	if t.br == nil {
		t.br = bufio.NewReaderSize(t.countReader(t.rs), t.bufferSize())
		t.fr = framer.LengthPrefix{}.NewReader(t.br, t.c.cfg.Limit())
	}
	return t.br
}

// bufferSize returns the size of a new read buffer: a listener's is
// charged to its connection's budget account, and minReadBuffer without
// room. Without the charge an application reading every fork a peer
// opened gave each 16 KiB outside the budget: 16 MiB a connection.
func (t *Transient) bufferSize() int {
	if t.c.acct == nil {
		return readBuffer
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.bufCharged && !t.released && t.c.acct.takeBuffer() {
		t.bufCharged = true
	}
	if t.bufCharged {
		return readBuffer
	}
	return minReadBuffer
}

func (t *Transient) setWriter(s *quicgo.Stream) {
	t.ws = s
	t.fw = framer.LengthPrefix{}.NewWriter(wholeWriter{s})
	t.wInMsg, t.werr = false, nil
}

// wholeWriter writes to a stream, and counts a write that handed every
// byte to QUIC as done even if a deadline passed meanwhile. quic-go
// reports the deadline when its writer wakes up after the last bytes
// were packed: the peer may already have read them all and closed
// (peerClosed sets the deadline), and the message was delivered.
type wholeWriter struct{ s io.Writer }

func (w wholeWriter) Write(p []byte) (int, error) {
	n, err := w.s.Write(p)
	if n == len(p) && errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	return n, err
}

// stream returns the current stream.
func (t *Transient) stream() *quicgo.Stream {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.s
}

// streamID returns the current stream's ID, which names the transient in
// fork headers and datagrams.
func (t *Transient) streamID() quicgo.StreamID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.id
}

// syncReader moves the reader to the stream that replaced its own in a
// 0-RTT replay; it reports whether it did.
func (t *Transient) syncReader() bool {
	if s := t.stream(); s != t.rs {
		t.setReader(s)
		return true
	}
	return false
}

// replay settles the 0-RTT outcome for t. If 0-RTT was rejected, t gets a
// new stream carrying its header and the messages it sent as 0-RTT data;
// remap maps old stream IDs to new ones, for fork headers.
func (t *Transient) replay(rejected bool, remap map[uint64]uint64) {
	t.mu.Lock()
	data := t.replayBuf
	t.replayBuf, t.replayOn = nil, false
	oldID := t.id
	t.mu.Unlock()
	if !rejected {
		return
	}
	hdr := t.hdr
	if hdr.kind == kindFork {
		p, ok := remap[hdr.parent]
		if !ok {
			t.abort(codeRefused)
			return
		}
		hdr.parent = p
	}
	s, err := t.c.qc.OpenStream()
	if err != nil {
		t.abort(codeClosed)
		return
	}
	t.c.acct.openedStream(s.StreamID())
	t.watchEnd(s)
	t.mu.Lock()
	t.s, t.id = s, s.StreamID()
	if t.waiting {
		_ = s.SetReadDeadline(time.Now())
	}
	t.mu.Unlock()
	t.c.rekey(t, oldID)
	remap[uint64(oldID)] = uint64(s.StreamID())
	if _, err := s.Write(append(appendHeader(nil, hdr), data...)); err != nil {
		t.abort(codeClosed)
	}
}

// Stack returns "quic".
func (t *Transient) Stack() string { return Name }

// Features returns the stack's features.
func (t *Transient) Features() psi.Features { return features }

// Association returns the Association ID sent by the dialler.
func (t *Transient) Association() [16]byte { return t.assoc }

// PeerIdentity returns what the connection's TLS handshake verified about
// the peer; forks share their connection's. A 0-RTT transient learns it
// only when the handshake completes (see HandshakeComplete).
func (t *Transient) PeerIdentity() psi.Identity {
	select {
	case <-t.c.qc.HandshakeComplete():
	default:
		return psi.Identity{}
	}
	certs := t.c.qc.ConnectionState().TLS.PeerCertificates
	return t.c.cfg.Security.PeerIdentity(certs, t.c.server)
}

// Class returns the traffic class the transient was forked with. QUIC
// streams deliver everything, so Milk is recorded but not acted on.
func (t *Transient) Class() psi.TrafficClass { return t.class }

// Used0RTT reports whether the connection's 0-RTT data was accepted. It is
// only final once the handshake is complete; see HandshakeComplete.
func (t *Transient) Used0RTT() bool { return t.c.qc.ConnectionState().Used0RTT }

// Resumed reports whether the connection resumed a TLS session from a
// ticket (with or without 0-RTT data). It is only final once the
// handshake is complete; see HandshakeComplete.
func (t *Transient) Resumed() bool { return t.c.qc.ConnectionState().TLS.DidResume }

// HandshakeComplete is closed when the connection's handshake completes or
// fails (quic-go's own only when it completes).
func (t *Transient) HandshakeComplete() <-chan struct{} { return t.c.hsEnd }

// HandshakeErr is why the handshake failed, once HandshakeComplete is
// closed; nil otherwise. A server that answered none of our packets took
// no 0-RTT data; one whose answers were all lost may have.
func (t *Transient) HandshakeErr() error {
	select {
	case <-t.c.hsEnd:
		return t.c.hsErr
	default:
		return nil
	}
}

// Stats returns the transient's datagram counters.
func (t *Transient) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

func (t *Transient) opError(op string, err error) error {
	return &post.OpError{Op: op, Stack: Name, Path: t.Path().String(), Err: err}
}

func (t *Transient) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// WriteMessage appends p to the current outbound message. A whole message
// with a Lifetime and the Unreliable property goes as a datagram when it
// fits in one. On a 0-RTT connection, idempotent whole messages go at once
// as 0-RTT data (and are sent again if the server rejects it); other
// messages wait for the handshake.
func (t *Transient) WriteMessage(ctx context.Context, p []byte, end bool, opts *psi.WriteOptions) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.isClosed() {
		return t.opError("send", post.ErrClosed)
	}
	if t.werr != nil {
		return t.opError("send", t.werr)
	}
	if err := ctx.Err(); err != nil {
		return t.opError("send", err)
	}
	var props *post.Properties
	if opts != nil {
		props = opts.Properties
	}
	if end && !t.wInMsg && props != nil && props.Lifetime > 0 && props.Unreliable && !t.c.cfg.Disabled.Has(psi.Datagrams) &&
		t.c.settled0RTT() && t.sendDatagram(p) {
		return nil
	}
	if end && !t.wInMsg && props != nil && props.Idempotent {
		if done, err := t.write0RTT(ctx, p); done {
			return err
		}
	}
	if err := t.c.waitRecovered(ctx, t.done); err != nil {
		return t.opError("send", err)
	}
	if s := t.stream(); s != t.ws {
		t.setWriter(s)
	}
	s := t.ws
	stop := cutWrite(ctx, s)
	err := t.fw.WriteMessage(p, end)
	if err == nil {
		err = t.fw.Flush()
	}
	stop()
	if err != nil {
		t.wInMsg = true // left incomplete
		return t.opError("send", t.failWrite(ctx, s, err))
	}
	t.wInMsg = !end
	return nil
}

// write0RTT sends a whole idempotent message as 0-RTT data, recording it
// for a replay. done is false when the connection is past 0-RTT or the
// replay buffer is full, and the message must take the normal path.
func (t *Transient) write0RTT(ctx context.Context, p []byte) (done bool, err error) {
	t.mu.Lock()
	if !t.replayOn || len(t.replayBuf)+len(p)+8 > maxReplay {
		t.mu.Unlock()
		return false, nil
	}
	var buf bytes.Buffer
	w := framer.LengthPrefix{}.NewWriter(&buf)
	if err := w.WriteMessage(p, true); err == nil {
		_ = w.Flush()
	}
	t.replayBuf = append(t.replayBuf, buf.Bytes()...)
	s := t.s
	t.mu.Unlock()
	// s is t.ws: the writer has no buffered data, as every write flushes.
	stop := cutWrite(ctx, s)
	_, err = wholeWriter{s}.Write(buf.Bytes())
	stop()
	if errors.Is(err, quicgo.Err0RTTRejected) {
		// The replay sends it again on a new stream.
		if err := t.c.waitRecovered(ctx, t.done); err != nil {
			return true, t.opError("send", err)
		}
		return true, nil
	}
	if err != nil {
		return true, t.opError("send", t.failWrite(ctx, s, err))
	}
	return true, nil
}

// failWrite records a write error: the stream is cut inside a frame and
// cannot go on.
func (t *Transient) failWrite(ctx context.Context, s *quicgo.Stream, err error) error {
	code := quicgo.StreamErrorCode(codeClosed)
	switch {
	case t.isClosed():
		err = post.ErrClosed
	case t.peerHasClosed():
		// peerClosed cut the write: the peer reads no more.
		err = post.Errorf(post.ErrClosed, "the peer closed the transient")
		code = codeConfirmed
	case ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("%w (stream abandoned)", ctx.Err())
	default:
		err = mapError(err)
	}
	t.werr = err
	s.CancelWrite(code)
	return err
}

func (t *Transient) peerHasClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peerDone
}

// sendDatagram sends p as one datagram; false means it must go on the
// stream instead.
func (t *Transient) sendDatagram(p []byte) bool {
	b := make([]byte, 0, 8+len(p))
	b = appendDatagramTag(b, uint64(t.streamID()))
	b = append(b, p...)
	// quic-go refuses a datagram that does not fit the current packet
	// size (DatagramTooLargeError) or that the peer does not accept.
	if err := t.c.qc.SendDatagram(b); err != nil {
		return false
	}
	t.mu.Lock()
	t.stats.DatagramsSent++
	t.mu.Unlock()
	return true
}

// pushDatagram queues a received datagram and wakes a reader waiting at a
// message boundary.
func (t *Transient) pushDatagram(msg []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.stats.DatagramsReceived++
	if len(t.dq) >= maxDatagramQueue {
		t.c.acct.give(datagramCost(t.dq[0]))
		t.dq[0] = nil
		t.dq = t.dq[1:]
		t.stats.DatagramsDropped++
	}
	// A listener's queued datagrams are charged to its budget, and one
	// without room is dropped, as the network may: 256 a transient,
	// 1,000 streams a connection, were up to 300 MiB a connection.
	if !t.c.acct.takeDatagram(datagramCost(msg)) {
		t.stats.DatagramsDropped++
		return
	}
	t.dq = append(t.dq, msg)
	if t.waiting {
		_ = t.s.SetReadDeadline(time.Now())
	}
}

// ReadMessage reads from the current inbound message. Datagrams are
// returned as whole messages between stream messages. At the end of the
// peer's stream it returns io.EOF.
func (t *Transient) ReadMessage(ctx context.Context, p []byte) (int, bool, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	for {
		n, end, err := t.read(ctx, p)
		if err != nil && t.c.early && errors.Is(err, quicgo.Err0RTTRejected) {
			// Nothing was received on a rejected stream: go on with
			// the stream that replaced it.
			if werr := t.c.waitRecovered(ctx, t.done); werr != nil {
				err = werr
			} else if t.syncReader() {
				continue
			}
		}
		if err != nil && err != io.EOF {
			err = t.opError("receive", err)
		}
		return n, end, err
	}
}

func (t *Transient) read(ctx context.Context, p []byte) (int, bool, error) {
	if t.isClosed() {
		return 0, false, post.ErrClosed
	}
	if t.dActive {
		return t.readDatagram(p)
	}
	if t.c.early {
		t.syncReader()
	}
	if t.rerr == io.EOF && !t.inMsg {
		// Datagrams may still come after the peer ended its stream.
		if t.popDatagram(false) {
			return t.readDatagram(p)
		}
	}
	if t.rerr != nil {
		return 0, false, t.rerr
	}
	br := t.reader()
	if !t.inMsg {
		// At a message boundary: take a datagram, or wait for stream data
		// while letting datagrams and ctx interrupt the wait.
		for {
			if t.popDatagram(true) {
				return t.readDatagram(p)
			}
			err := t.peek(ctx)
			t.mu.Lock()
			t.waiting = false
			t.mu.Unlock()
			if err == nil {
				break
			}
			if err == errInterrupted {
				continue
			}
			if ctxErr(ctx, err) {
				return 0, false, err
			}
			if err == io.EOF {
				t.mu.Lock()
				more := len(t.dq) > 0
				t.mu.Unlock()
				if more {
					continue
				}
			}
			return 0, false, t.fail(err)
		}
	} else if br.Buffered() == 0 {
		for {
			err := t.peek(ctx)
			if err == nil {
				break
			}
			if err == errInterrupted {
				continue
			}
			if ctxErr(ctx, err) {
				return 0, false, err
			}
			if err == io.EOF {
				err = fmt.Errorf("%w: stream ended inside a message", post.ErrMalformed)
			}
			return 0, false, t.fail(err)
		}
	}
	// Stream data is buffered: the framer only blocks if a frame header is
	// split across packets.
	stop := whenDone(ctx, t.interruptRead, t.clearReadDeadline)
	n, end, err := t.fr.ReadMessage(p)
	stop()
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The framer resumes after a deadline: only Close ends the
		// transient here.
		switch {
		case t.isClosed():
			err = post.ErrClosed
		case ctx.Err() != nil:
			return n, false, ctx.Err()
		default:
			return n, false, nil
		}
	}
	if errors.Is(err, framer.ErrAborted) {
		// The peer abandoned this message; the next one follows.
		t.inMsg = false
		return n, false, err
	}
	if err != nil {
		return n, false, t.fail(err)
	}
	t.inMsg = !end
	return n, end, nil
}

// ctxErr reports whether err is ctx's own error, which leaves the
// transient usable.
func ctxErr(ctx context.Context, err error) bool {
	return ctx.Err() != nil && err == ctx.Err()
}

// errInterrupted reports a wait cut short by a datagram or a stale
// deadline; the caller looks again.
var errInterrupted = errors.New("interrupted")

// peek waits until stream data is buffered. It returns errInterrupted when
// a datagram arrived or a stale deadline fired, ctx's error when ctx is
// done, post.ErrClosed after Close.
func (t *Transient) peek(ctx context.Context) error {
	br := t.reader()
	if br.Buffered() > 0 {
		return nil
	}
	stop := whenDone(ctx, t.interruptRead, t.clearReadDeadline)
	_, err := br.Peek(1)
	stop()
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		switch {
		case t.isClosed():
			return post.ErrClosed
		case ctx.Err() != nil:
			return ctx.Err()
		}
		t.clearReadDeadline()
		return errInterrupted
	}
	return err
}

// whenDone runs cut if ctx is done before the returned stop is called;
// stop then runs undo. A cut that races with stop never outlives it, so no
// stale deadline is left for the next call.
func whenDone(ctx context.Context, cut, undo func()) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	var mu sync.Mutex
	armed := true
	stopFunc := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if armed {
			cut()
		}
	})
	return func() {
		if stopFunc() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		armed = false
		undo()
	}
}

// cutWrite makes a write on s return when ctx is done.
func cutWrite(ctx context.Context, s *quicgo.Stream) (stop func()) {
	return whenDone(ctx,
		func() { _ = s.SetWriteDeadline(time.Now()) },
		func() { _ = s.SetWriteDeadline(time.Time{}) })
}

func (t *Transient) interruptRead() {
	t.mu.Lock()
	defer t.mu.Unlock()
	_ = t.s.SetReadDeadline(time.Now())
}

// clearReadDeadline removes a deadline set to interrupt a read, unless the
// transient is closing.
func (t *Transient) clearReadDeadline() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		_ = t.s.SetReadDeadline(time.Time{})
	}
}

// popDatagram makes the oldest queued datagram the one being read. If
// there is none and wait is set, it marks the reader as waiting, so that
// pushDatagram interrupts its wait.
func (t *Transient) popDatagram(wait bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.dq) == 0 {
		t.waiting = wait
		return false
	}
	t.dcur, t.dActive = t.dq[0], true
	t.c.acct.give(datagramCost(t.dq[0]))
	t.dq[0] = nil
	t.dq = t.dq[1:]
	return true
}

// datagramCost is what a queued datagram is charged: its buffer.
func datagramCost(msg []byte) int64 { return int64(cap(msg)) }

// dropDatagrams empties the queue and gives back its charge. Called with
// mu held.
func (t *Transient) dropDatagrams() {
	for _, d := range t.dq {
		t.c.acct.give(datagramCost(d))
	}
	t.dq = nil
}

// readDatagram copies from the datagram being read.
func (t *Transient) readDatagram(p []byte) (int, bool, error) {
	n := copy(p, t.dcur)
	t.dcur = t.dcur[n:]
	if len(t.dcur) > 0 {
		return n, false, nil
	}
	t.dcur, t.dActive = nil, false
	return n, true, nil
}

// fail records a read error. Errors that are the peer's fault end the
// transient's stream with an error code; the connection and its other
// transients go on.
func (t *Transient) fail(err error) error {
	switch {
	case err == io.EOF:
		if t.rerr != io.EOF {
			t.rerr = io.EOF
			t.c.spawn(t.peerClosed)
		}
		return err
	case errors.Is(err, post.ErrMessageTooLarge):
		t.c.acct.cancelRead(t.rs, codeTooLarge)
		t.rs.CancelWrite(codeTooLarge)
	case errors.Is(err, post.ErrMalformed):
		t.c.acct.cancelRead(t.rs, codeMalformed)
		t.rs.CancelWrite(codeMalformed)
	case errors.Is(err, os.ErrDeadlineExceeded) && t.isClosed():
		err = post.ErrClosed
	default:
		err = mapError(err)
	}
	t.rerr = err
	return err
}

// Fork opens a new stream on the same connection. The peer receives it
// from this transient's AcceptFork.
func (t *Transient) Fork(ctx context.Context, class psi.TrafficClass) (psi.Transient, error) {
	f, err := t.fork(ctx, class)
	if err != nil {
		return nil, t.opError("fork", err)
	}
	return f, nil
}

func (t *Transient) fork(ctx context.Context, class psi.TrafficClass) (*Transient, error) {
	if t.isClosed() {
		return nil, post.ErrClosed
	}
	if class > psi.Milk {
		return nil, fmt.Errorf("%w: traffic class %d", post.ErrNotSupported, class)
	}
	if t.c.cfg.Disabled.Has(psi.Fork) {
		return nil, post.Errorf(post.ErrPolicyConflict, "the policy prohibits forking")
	}
	return t.c.openTransient(ctx, header{kind: kindFork, class: class}, t, t.assoc, class)
}

// pushFork queues a fork the peer opened; false if t is closed.
func (t *Transient) pushFork(f *Transient) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.forks = append(t.forks, f)
	select {
	case t.forkSig <- struct{}{}:
	default:
	}
	return true
}

// AcceptFork returns the next transient the peer forked from this one.
// Once the peer ended this transient in order (all of its stream has
// arrived, read or not) and no fork is queued, it fails with an error
// wrapping post.ErrClosed: the peer forks no more from it.
func (t *Transient) AcceptFork(ctx context.Context) (psi.Transient, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, t.opError("accept fork", post.ErrClosed)
		}
		if len(t.forks) > 0 {
			f := t.forks[0]
			t.forks[0] = nil
			t.forks = t.forks[1:]
			t.mu.Unlock()
			return f, nil
		}
		if t.peerDone {
			t.mu.Unlock()
			return nil, t.opError("accept fork", post.Errorf(post.ErrClosed, "the peer closed the transient"))
		}
		t.mu.Unlock()
		select {
		case <-t.forkSig:
		case <-t.done:
		case <-ctx.Done():
			return nil, t.opError("accept fork", ctx.Err())
		case <-t.c.qc.Context().Done():
			return nil, t.opError("accept fork", mapError(context.Cause(t.c.qc.Context())))
		}
	}
}

// Path returns the connection's path with quic-go's RTT and loss
// estimates.
func (t *Transient) Path() post.Path {
	st := t.c.qc.ConnectionStats()
	remote := addrPort(t.c.qc.RemoteAddr())
	p := post.Path{
		// quic-go says which address a server's connection was reached
		// at, not a client's bound to the unspecified address: then the
		// one the system sends from to the peer.
		Local:  t.c.src.For(addrPort(t.c.qc.LocalAddr()), remote),
		Remote: remote,
		RTT:    st.SmoothedRTT,
		RTTVar: st.MeanDeviation,
		MTU:    packetSize,
		Active: t.c.qc.Context().Err() == nil,
	}
	if st.PacketsSent > 0 {
		p.Loss = float64(st.PacketsLost) / float64(st.PacketsSent)
	}
	if st.SmoothedRTT > 0 {
		p.Rate = float64(st.CongestionWindow) / st.SmoothedRTT.Seconds()
	}
	return p
}

// Paths returns the one path QUIC uses.
func (t *Transient) Paths() []post.Path { return []post.Path{t.Path()} }

func addrPort(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// Close is CloseContext bounded by Config.Linger.
func (t *Transient) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), t.c.cfg.LingerTime())
	defer cancel()
	return t.CloseContext(ctx)
}

// CloseContext ends the transient's outbound stream after the data already
// written, then reads and discards what the peer still sends until the
// peer ends its side too, which it does once its stack has read all of
// ours: that is the confirmation. It returns nil only then. If ctx ends
// first, or the peer resets the stream, the transient is aborted and an
// error returned. A blocked ReadMessage or WriteMessage returns
// post.ErrClosed at once; forks not yet accepted are refused. The
// connection closes when its last transient is done.
func (t *Transient) CloseContext(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		closing, aborted := t.closing, t.aborted
		t.mu.Unlock()
		switch {
		case closing != nil:
			// Another Close is under way: report its result.
			select {
			case <-closing:
				return t.closeErr
			case <-ctx.Done():
				return t.opError("close", closeFailure(ctx, ctx.Err()))
			}
		case aborted:
			return t.opError("close", post.Errorf(post.ErrClosed, "aborted"))
		}
		return nil
	}
	t.closed = true
	t.closing = make(chan struct{})
	close(t.done)
	forks := t.forks
	t.forks = nil
	t.dropDatagrams()
	_ = t.s.SetReadDeadline(time.Now())
	t.mu.Unlock()
	for _, f := range forks {
		f.abort(codeRefused)
	}
	t.closeErr = t.finishClose(ctx)
	if t.closeErr == nil && t.endedFirst {
		t.c.awaitEnd(ctx)
	}
	t.c.finishTrace()
	close(t.closing)
	return t.closeErr
}

// finishClose ends the stream and waits for the peer's confirmation.
func (t *Transient) finishClose(ctx context.Context) error {
	if err := t.c.waitRecovered(ctx, nil); err != nil {
		t.abort(codeClosed)
		return t.opError("close", closeFailure(ctx, err))
	}
	if err := t.closeWrite(); err != nil {
		t.abort(codeClosed)
		return t.opError("close", err)
	}
	if err := t.awaitPeer(ctx); err != nil {
		t.abort(codeClosed)
		return t.opError("close", closeFailure(ctx, err))
	}
	t.c.awaitTicket(ctx)
	t.releaseOnce()
	return nil
}

// closeFailure reports a Close cut short by ctx as a timeout wrapping
// ctx's error. awaitPeer sets ctx's deadline on the stream, whose read can
// fail before ctx's timer marks it done.
func closeFailure(ctx context.Context, err error) error {
	if cerr := ctxend.Err(ctx); cerr != nil && (errors.Is(err, cerr) || errors.Is(err, os.ErrDeadlineExceeded)) {
		return fmt.Errorf("%w: peer did not confirm the close: %w", post.ErrTimeout, cerr)
	}
	return mapError(err)
}

// closeWrite ends the write side after a write in progress, which is cut
// short so that Close does not wait for flow control. It returns an error
// if a message was left incomplete, so the stream had to be reset.
func (t *Transient) closeWrite() error {
	s := t.stream()
	_ = s.SetWriteDeadline(time.Now())
	t.wmu.Lock()
	defer t.wmu.Unlock()
	var err error
	// A replayed stream not yet written through fw holds whole messages
	// only.
	switch {
	case t.ws != s || (t.werr == nil && !t.wInMsg):
		_ = s.Close()
	case t.werr != nil && !errors.Is(t.werr, post.ErrClosed):
		err = t.werr
	case t.werr == nil:
		s.CancelWrite(codeAborted)
		err = post.Errorf(post.ErrClosed, "closed inside a message, which was aborted")
	}
	t.werr = post.ErrClosed
	return err
}

// awaitPeer discards the peer's data until it ends its side of the stream,
// or ctx ends.
func (t *Transient) awaitPeer(ctx context.Context) error {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	t.syncReader()
	t.endedFirst = t.rerr == io.EOF || t.peerHasClosed()
	switch {
	case t.rerr == io.EOF:
		return nil
	case t.rerr != nil && !errors.Is(t.rerr, post.ErrClosed):
		return t.rerr
	}
	if d, ok := ctx.Deadline(); ok {
		_ = t.rs.SetReadDeadline(d)
	} else {
		_ = t.rs.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = t.rs.SetReadDeadline(time.Now()) })
	// What a read buffered first, then the stream; a transient never
	// read has no buffer to make for this.
	var r io.Reader = t.countReader(t.rs)
	if t.br != nil {
		r = t.br
	}
	_, err := io.Copy(io.Discard, r)
	stop()
	t.rerr = post.ErrClosed
	var se *quicgo.StreamError
	if errors.As(err, &se) && se.Remote && se.ErrorCode == codeConfirmed {
		return nil // the peer had everything, and dropped a message of its own
	}
	return err
}

// peerClosed ends the write side once the peer ended its own: the peer
// reads nothing more, and our end confirms its close.
func (t *Transient) peerClosed() {
	s := t.stream()
	t.mu.Lock()
	t.peerDone = true
	t.mu.Unlock()
	select {
	case t.forkSig <- struct{}{}: // a waiting AcceptFork ends
	default:
	}
	// A write blocked in flow control would wait for a peer that reads
	// no more: cut it.
	_ = s.SetWriteDeadline(time.Now())
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.werr != nil || t.ws != s {
		return
	}
	if t.wInMsg {
		s.CancelWrite(codeConfirmed)
	} else {
		_ = s.Close()
	}
	t.werr = post.Errorf(post.ErrClosed, "the peer closed the transient")
}

// Abort ends the transient at once: its stream is reset in both
// directions, and if it was the connection's last transient the
// connection closes with an error code.
func (t *Transient) Abort(err error) {
	t.mu.Lock()
	if t.released {
		t.mu.Unlock()
		return
	}
	t.aborted = true
	t.mu.Unlock()
	t.abort(codeAborted)
}

// AbortMessage abandons the message being written: the framing carries an
// abort marker, the peer's reader gets an error wrapping post.ErrReset for
// that message, and the next message follows as usual. If the stream was
// cut inside a frame, the transient is aborted instead.
func (t *Transient) AbortMessage(ctx context.Context) error {
	t.wmu.Lock()
	if t.isClosed() {
		t.wmu.Unlock()
		return t.opError("abort message", post.ErrClosed)
	}
	if !t.wInMsg {
		t.wmu.Unlock()
		return nil // no message in progress
	}
	err := t.werr
	if err == nil {
		s := t.ws
		stop := cutWrite(ctx, s)
		err = t.fw.(framer.MessageAborter).AbortMessage()
		stop()
		if err == nil {
			t.wInMsg = false
			t.wmu.Unlock()
			return nil
		}
		err = t.failWrite(ctx, s, err)
	}
	t.wmu.Unlock()
	err = post.Errorf(post.ErrReset, "message aborted with its transient: %v", err)
	t.Abort(err)
	return t.opError("abort message", err)
}

// abort ends the transient at once with code, without draining.
func (t *Transient) abort(code quicgo.StreamErrorCode) {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.done)
	}
	forks := t.forks
	t.forks = nil
	t.mu.Unlock()
	for _, f := range forks {
		f.abort(code)
	}
	s := t.stream()
	t.c.acct.cancelRead(s, code)
	s.CancelWrite(code)
	t.releaseOnce()
}

func (t *Transient) wasAborted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.aborted
}

func (t *Transient) releaseOnce() {
	t.mu.Lock()
	r := t.released
	t.released = true
	t.dropDatagrams()
	buf := t.bufCharged
	t.bufCharged = false
	t.mu.Unlock()
	if buf {
		t.c.acct.give(readBuffer)
	}
	if !r {
		if cr := t.rc.Load(); cr != nil {
			cr.release() // what it kept is not read any more
		}
		if t.charged {
			t.c.acct.giveStream()
		}
		t.c.release(t)
	}
}
