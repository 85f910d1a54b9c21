package quic

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
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
	s     *quicgo.Stream
	id    quicgo.StreamID
	assoc [16]byte
	class psi.TrafficClass

	// Read side, guarded by rmu.
	rmu     sync.Mutex
	br      *bufio.Reader
	fr      framer.MessageReader
	inMsg   bool   // inside a stream message
	dcur    []byte // rest of the datagram being read
	dActive bool   // a datagram is being read
	rerr    error  // sticky read error

	// Write side, guarded by wmu.
	wmu    sync.Mutex
	fw     framer.MessageWriter
	wInMsg bool  // inside a stream message
	werr   error // sticky write error

	mu       sync.Mutex
	closed   bool
	released bool
	waiting  bool // a reader waits for stream data at a message boundary
	dq       [][]byte
	forks    []*Transient
	forkSig  chan struct{}
	done     chan struct{}
	stats    Stats
}

var _ psi.Transient = (*Transient)(nil)

func newTransient(c *conn, s *quicgo.Stream, assoc [16]byte, class psi.TrafficClass) *Transient {
	t := &Transient{
		c:       c,
		s:       s,
		id:      s.StreamID(),
		assoc:   assoc,
		class:   class,
		br:      bufio.NewReaderSize(s, 64<<10),
		forkSig: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	t.fr = framer.LengthPrefix{}.NewReader(t.br, c.cfg.Limit())
	t.fw = framer.LengthPrefix{}.NewWriter(s)
	return t
}

// Stack returns "quic".
func (t *Transient) Stack() string { return Name }

// Features returns the stack's features.
func (t *Transient) Features() psi.Features { return features }

// Association returns the Association ID sent by the dialler.
func (t *Transient) Association() [16]byte { return t.assoc }

// Class returns the traffic class the transient was forked with. QUIC
// streams deliver everything, so Milk is recorded but not acted on.
func (t *Transient) Class() psi.TrafficClass { return t.class }

// Used0RTT reports whether the connection's 0-RTT data was accepted. It is
// only final once the handshake is complete; see HandshakeComplete.
func (t *Transient) Used0RTT() bool { return t.c.qc.ConnectionState().Used0RTT }

// HandshakeComplete is closed when the connection's handshake completes or
// fails.
func (t *Transient) HandshakeComplete() <-chan struct{} { return t.c.qc.HandshakeComplete() }

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
// fits in one. Before the handshake completes only idempotent whole
// messages are sent (as 0-RTT data); others wait for it.
func (t *Transient) WriteMessage(ctx context.Context, p []byte, end bool, opts *WriteOptions) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.isClosed() {
		return t.opError("send", post.ErrClosed)
	}
	if t.werr != nil {
		return t.opError("send", t.werr)
	}
	var props *post.Properties
	if opts != nil {
		props = opts.Properties
	}
	if end && !t.wInMsg && props != nil && props.Lifetime > 0 && props.Unreliable && t.sendDatagram(p) {
		return nil
	}
	if props == nil || !props.Idempotent || !end || t.wInMsg {
		select {
		case <-t.c.qc.HandshakeComplete():
		default:
			select {
			case <-t.c.qc.HandshakeComplete():
			case <-ctx.Done():
				return t.opError("send", ctx.Err())
			case <-t.done:
				return t.opError("send", post.ErrClosed)
			}
		}
	}
	stop := func() bool { return false }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = t.s.SetWriteDeadline(time.Now()) })
	}
	err := t.fw.WriteMessage(p, end)
	if err == nil {
		err = t.fw.Flush()
	}
	if !stop() && ctx.Done() != nil {
		_ = t.s.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		// The stream is cut inside a frame; it cannot go on.
		switch {
		case t.isClosed():
			err = post.ErrClosed
		case ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded):
			err = fmt.Errorf("%w (stream abandoned)", ctx.Err())
		default:
			err = mapError(err)
		}
		t.werr = err
		t.s.CancelWrite(codeClosed)
		return t.opError("send", err)
	}
	t.wInMsg = !end
	return nil
}

// WriteOptions is psi.WriteOptions.
type WriteOptions = psi.WriteOptions

// sendDatagram sends p as one datagram; false means it must go on the
// stream instead.
func (t *Transient) sendDatagram(p []byte) bool {
	if !t.c.qc.ConnectionState().SupportsDatagrams.Remote {
		return false
	}
	if m := t.c.maxDgram.Load(); m > 0 && int64(len(p))+8 > m {
		return false
	}
	b := make([]byte, 0, 8+len(p))
	b = appendDatagramTag(b, uint64(t.id))
	b = append(b, p...)
	err := t.c.qc.SendDatagram(b)
	var tooLarge *quicgo.DatagramTooLargeError
	if errors.As(err, &tooLarge) {
		t.c.maxDgram.Store(tooLarge.MaxDatagramPayloadSize)
		return false
	}
	if err != nil {
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
		t.dq[0] = nil
		t.dq = t.dq[1:]
		t.stats.DatagramsDropped++
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
	n, end, err := t.read(ctx, p)
	if err != nil && err != io.EOF {
		err = t.opError("receive", err)
	}
	return n, end, err
}

func (t *Transient) read(ctx context.Context, p []byte) (int, bool, error) {
	if t.isClosed() {
		return 0, false, post.ErrClosed
	}
	if t.dActive {
		return t.readDatagram(p)
	}
	if t.rerr != nil {
		return 0, false, t.rerr
	}
	if !t.inMsg {
		// At a message boundary: take a datagram, or wait for stream data
		// while letting datagrams and ctx interrupt the wait.
		for {
			t.mu.Lock()
			if len(t.dq) > 0 {
				t.dcur, t.dActive = t.dq[0], true
				t.dq[0] = nil
				t.dq = t.dq[1:]
				t.mu.Unlock()
				return t.readDatagram(p)
			}
			t.waiting = true
			t.mu.Unlock()
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
	} else if t.br.Buffered() == 0 {
		for {
			err := t.peek(ctx)
			if err == nil {
				break
			}
			if err == errInterrupted {
				continue
			}
			if err == io.EOF {
				err = fmt.Errorf("%w: stream ended inside a message", post.ErrMalformed)
			}
			return 0, false, t.fail(err)
		}
	}
	// Stream data is buffered: the framer only blocks if a frame header is
	// split across packets.
	stop := func() bool { return false }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, t.interruptRead)
	}
	n, end, err := t.fr.ReadMessage(p)
	if !stop() && ctx.Done() != nil {
		t.clearReadDeadline()
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			err = ctx.Err()
		}
		return n, false, t.fail(err)
	}
	t.inMsg = !end
	return n, end, nil
}

// errInterrupted reports a wait cut short by a datagram or a stale
// deadline; the caller looks again.
var errInterrupted = errors.New("interrupted")

// peek waits until stream data is buffered. It returns errInterrupted when
// a datagram arrived or a stale deadline fired, ctx's error when ctx is
// done, post.ErrClosed after Close.
func (t *Transient) peek(ctx context.Context) error {
	stop := func() bool { return false }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, t.interruptRead)
	}
	_, err := t.br.Peek(1)
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
		t.rerr = io.EOF
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// Only reached inside a frame header: the framer cannot resume.
		t.rerr = fmt.Errorf("%w: read abandoned inside a message: %v", post.ErrClosed, err)
		return err
	case errors.Is(err, post.ErrMessageTooLarge):
		t.s.CancelRead(codeTooLarge)
		t.s.CancelWrite(codeTooLarge)
	case errors.Is(err, post.ErrMalformed):
		t.s.CancelRead(codeMalformed)
		t.s.CancelWrite(codeMalformed)
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
	s, err := t.c.qc.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, mapError(err)
	}
	hdr := appendHeader(nil, header{kind: kindFork, class: class, parent: uint64(t.id)})
	if _, err := s.Write(hdr); err != nil {
		s.CancelWrite(codeClosed)
		s.CancelRead(codeClosed)
		return nil, mapError(err)
	}
	f := newTransient(t.c, s, t.assoc, class)
	t.c.register(f)
	return f, nil
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
	p := post.Path{
		Local:  addrPort(t.c.qc.LocalAddr()),
		Remote: addrPort(t.c.qc.RemoteAddr()),
		RTT:    st.SmoothedRTT,
		RTTVar: st.MeanDeviation,
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

// Close ends the transient's outbound stream after the data already
// written, and reads and discards what the peer still sends until it ends
// its side too (at most the idle timeout). A blocked ReadMessage or
// WriteMessage returns post.ErrClosed; forks not yet accepted are refused.
// The connection closes when its last transient is closed.
func (t *Transient) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	forks := t.forks
	t.forks = nil
	t.dq = nil
	_ = t.s.SetReadDeadline(time.Now())
	t.mu.Unlock()
	for _, f := range forks {
		f.abort(codeRefused)
	}

	// Cut a write blocked by flow control: Close must not hang.
	_ = t.s.SetWriteDeadline(time.Now())
	t.wmu.Lock()
	if t.werr == nil && !t.wInMsg {
		_ = t.s.Close()
	} else {
		t.s.CancelWrite(codeClosed)
	}
	t.werr = post.ErrClosed
	t.wmu.Unlock()

	t.c.spawn(t.drain)
	return nil
}

// drain discards the peer's remaining data until it ends its side, so the
// connection knows both sides are done.
func (t *Transient) drain() {
	t.rmu.Lock()
	if t.rerr == nil {
		_ = t.s.SetReadDeadline(time.Now().Add(t.c.cfg.Idle()))
		_, _ = io.Copy(io.Discard, t.br)
	}
	t.rerr = post.ErrClosed
	t.s.CancelRead(codeClosed)
	t.rmu.Unlock()
	t.releaseOnce()
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
	t.s.CancelRead(code)
	t.s.CancelWrite(code)
	t.releaseOnce()
}

func (t *Transient) releaseOnce() {
	t.mu.Lock()
	r := t.released
	t.released = true
	t.mu.Unlock()
	if !r {
		t.c.release(t)
	}
}
