package quic

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/psi"
)

const (
	// maxPending bounds datagrams held for streams not yet seen.
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

	maxDgram atomic.Int64 // largest datagram payload seen to fit; 0 unknown

	mu       sync.Mutex
	wg       sync.WaitGroup // goroutines started with spawn
	exiting  bool           // the connection is gone; spawn runs inline
	ts       map[quicgo.StreamID]*Transient
	live     int // transients not yet closed and drained
	gotRoot  bool
	pending  map[quicgo.StreamID][][]byte
	npending int
	linger   *time.Timer
}

// newConn wraps qc and starts its stream and datagram loops. The
// connection holds one reference to tr, released when qc is closed.
func newConn(qc *quicgo.Conn, tr *transport, cfg *psi.Config, server bool, onRoot func(*Transient) bool) *conn {
	c := &conn{
		qc:      qc,
		tr:      tr,
		cfg:     cfg,
		log:     cfg.Log().With("stack", Name, "remote", qc.RemoteAddr().String()),
		server:  server,
		onRoot:  onRoot,
		ts:      make(map[quicgo.StreamID]*Transient),
		pending: make(map[quicgo.StreamID][][]byte),
	}
	if server {
		// A client that never opens its root stream is dropped.
		c.linger = time.AfterFunc(cfg.Handshake(), func() {
			c.mu.Lock()
			got := c.gotRoot
			c.mu.Unlock()
			if !got {
				c.abort(codeRefused, "no root stream")
			}
		})
	}
	c.spawn(c.acceptStreams)
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
	if c.linger != nil {
		c.linger.Stop()
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.tr.release()
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

// abort closes the connection at once.
func (c *conn) abort(code quicgo.ApplicationErrorCode, msg string) {
	_ = c.qc.CloseWithError(code, msg)
}

// openRoot opens the dialler's root stream.
func (c *conn) openRoot(assoc [16]byte) (*Transient, error) {
	s, err := c.qc.OpenStream()
	if err != nil {
		return nil, mapError(err)
	}
	hdr := appendHeader(nil, header{kind: kindRoot, association: assoc})
	if _, err := s.Write(hdr); err != nil {
		s.CancelWrite(codeClosed)
		return nil, mapError(err)
	}
	t := newTransient(c, s, assoc, psi.Wine)
	c.register(t)
	return t, nil
}

// register adds t to the connection's transients and hands it any
// datagrams that arrived before its stream did.
func (c *conn) register(t *Transient) {
	c.mu.Lock()
	c.ts[t.id] = t
	c.live++
	if c.linger != nil {
		c.linger.Stop()
		c.linger = nil
	}
	dq := c.pending[t.id]
	if dq != nil {
		delete(c.pending, t.id)
		c.npending -= len(dq)
	}
	c.mu.Unlock()
	for _, d := range dq {
		t.pushDatagram(d)
	}
}

// release drops t. Once no transient is left, the dialler closes the
// connection; the listener side waits for the dialler to do so, so the
// last data of either side is not cut off, but no longer than the idle
// timeout.
func (c *conn) release(t *Transient) {
	c.mu.Lock()
	if c.ts[t.id] == t {
		delete(c.ts, t.id)
	}
	c.live--
	last := c.live == 0
	if last && c.server && !c.exiting {
		if c.linger != nil {
			c.linger.Stop()
		}
		c.linger = time.AfterFunc(c.cfg.Idle(), func() { c.abort(codeNoError, "") })
	}
	c.mu.Unlock()
	if last && !c.server {
		c.abort(codeNoError, "")
	}
}

// lookup returns the live transient on stream id.
func (c *conn) lookup(id quicgo.StreamID) *Transient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ts[id]
}

// acceptStreams takes the streams the peer opens.
func (c *conn) acceptStreams() {
	for {
		s, err := c.qc.AcceptStream(c.qc.Context())
		if err != nil {
			return
		}
		c.spawn(func() { c.handleStream(s) })
	}
}

// handleStream reads a new stream's header and hands the stream to the
// listener or to the parent transient.
func (c *conn) handleStream(s *quicgo.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(c.cfg.Handshake()))
	h, err := readHeader(s)
	_ = s.SetReadDeadline(time.Time{})
	if err != nil {
		c.log.Debug("bad stream header", "stream", s.StreamID(), "err", err)
		s.CancelRead(codeMalformed)
		s.CancelWrite(codeMalformed)
		return
	}
	switch h.kind {
	case kindRoot:
		c.mu.Lock()
		ok := c.server && !c.gotRoot
		c.gotRoot = true
		c.mu.Unlock()
		if !ok {
			s.CancelRead(codeRefused)
			s.CancelWrite(codeRefused)
			return
		}
		t := newTransient(c, s, h.association, psi.Wine)
		c.register(t)
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
				return
			}
		}
		if !c.onRoot(t) {
			t.abort(codeRefused)
			c.abort(codeRefused, "listener closed")
		}
	case kindFork:
		var p *Transient
		if h.parent <= maxStreamID {
			p = c.lookup(quicgo.StreamID(h.parent))
		}
		if p == nil {
			s.CancelRead(codeRefused)
			s.CancelWrite(codeRefused)
			return
		}
		t := newTransient(c, s, p.assoc, h.class)
		c.register(t)
		if !p.pushFork(t) {
			t.abort(codeRefused)
		}
	}
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
			// The stream may still be on its way.
			if c.npending < maxPending {
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
