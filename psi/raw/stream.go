package raw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/internal/tlsalert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// conn is what a stream transient runs on: a TCP or TLS connection, or a
// QUIC stream.
type conn interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// stream is a transient over one byte stream, framed by a framer.
type stream struct {
	name   string
	feat   psi.Features
	c      conn
	r      framer.MessageReader
	w      framer.MessageWriter
	path   post.Path
	id     psi.Identity
	linger time.Duration
	fork   func(ctx context.Context) (psi.Transient, error) // nil: no forks
	close  func(abort bool) error                           // extra teardown after c

	wmu    chan struct{} // held while the framer's writer is in use
	mu     sync.Mutex
	closed bool
	once   sync.Once
}

// lockWrite takes the writer, or fails when ctx ends first.
func (s *stream) lockWrite(ctx context.Context) error {
	select {
	case s.wmu <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stream) unlockWrite() { <-s.wmu }

func newStream(name string, feat psi.Features, c net.Conn, f framer.Framer, cfg *psi.Config, id psi.Identity) *stream {
	s := newStreamOn(name, feat, c, f, cfg, id)
	s.path = post.Path{Local: addrPort(c.LocalAddr()), Remote: addrPort(c.RemoteAddr()), Active: true}
	return s
}

func newStreamOn(name string, feat psi.Features, c conn, f framer.Framer, cfg *psi.Config, id psi.Identity) *stream {
	if f == nil {
		f = framer.LengthPrefix{}
	}
	var r framer.MessageReader
	var w framer.MessageWriter
	if pf, ok := f.(framer.PairFramer); ok {
		r, w = pf.NewPair(c, c, cfg.Limit())
	} else {
		r, w = f.NewReader(c, cfg.Limit()), f.NewWriter(c)
	}
	return &stream{name: name, feat: feat, c: c, r: r, w: w, id: id,
		wmu: make(chan struct{}, 1), linger: cfg.LingerTime()}
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func (s *stream) Stack() string              { return s.name }
func (s *stream) Features() psi.Features     { return s.feat }
func (s *stream) Path() post.Path            { return s.path }
func (s *stream) Paths() []post.Path         { return []post.Path{s.path} }
func (s *stream) Association() [16]byte      { return [16]byte{} }
func (s *stream) PeerIdentity() psi.Identity { return s.id }
func (s *stream) isClosed() bool             { s.mu.Lock(); defer s.mu.Unlock(); return s.closed }
func (s *stream) Fork(ctx context.Context, _ psi.TrafficClass) (psi.Transient, error) {
	if s.fork == nil {
		return nil, post.Errorf(post.ErrNotSupported, "%s cannot fork: an ordinary server takes one stream per connection", s.name)
	}
	return s.fork(ctx)
}

// AcceptFork fails: an ordinary server opens no streams to a client.
func (s *stream) AcceptFork(context.Context) (psi.Transient, error) {
	return nil, post.Errorf(post.ErrNotSupported, "%s: an ordinary server forks nothing", s.name)
}

// during runs f with set applied as the deadline ctx implies, and moves
// the deadline to now if ctx ends first. If ctx ended, it waits for that
// move: run late, it would land on the next call's deadline and time out
// a read or write whose context is still live.
func during(ctx context.Context, set func(time.Time) error, f func() error) error {
	if d, ok := ctx.Deadline(); ok {
		set(d)
	} else {
		set(time.Time{})
	}
	moved := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		set(time.Unix(1, 0))
		close(moved)
	})
	err := f()
	if !stop() {
		<-moved
	}
	return err
}

func (s *stream) WriteMessage(ctx context.Context, p []byte, end bool, opts *psi.WriteOptions) error {
	if s.isClosed() {
		return post.Errorf(post.ErrClosed, "%s: write after close", s.name)
	}
	more := opts != nil && opts.More
	if err := s.lockWrite(ctx); err != nil {
		return s.ioError(ctx, "send", err)
	}
	defer s.unlockWrite()
	if s.isClosed() {
		return post.Errorf(post.ErrClosed, "%s: write after close", s.name)
	}
	err := during(ctx, s.c.SetWriteDeadline, func() error {
		if err := s.w.WriteMessage(p, end); err != nil {
			return err
		}
		if end && more {
			return nil
		}
		return s.w.Flush()
	})
	return s.ioError(ctx, "send", err)
}

// Flush sends messages held back by WriteOptions.More.
func (s *stream) Flush(ctx context.Context) error {
	if err := s.lockWrite(ctx); err != nil {
		return s.ioError(ctx, "flush", err)
	}
	defer s.unlockWrite()
	return s.ioError(ctx, "flush", during(ctx, s.c.SetWriteDeadline, s.w.Flush))
}

func (s *stream) ReadMessage(ctx context.Context, p []byte) (n int, end bool, err error) {
	if s.isClosed() {
		return 0, false, post.Errorf(post.ErrClosed, "%s: read after close", s.name)
	}
	err = during(ctx, s.c.SetReadDeadline, func() error {
		var e error
		n, end, e = s.r.ReadMessage(p)
		return e
	})
	if err == io.EOF {
		return n, end, io.EOF
	}
	return n, end, s.ioError(ctx, "receive", err)
}

// ioError maps an error of the underlying stream to a post sentinel.
func (s *stream) ioError(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	// during sets ctx's deadline on the conn, which can fail the call
	// before ctx's timer marks it done.
	cerr := ctxend.Err(ctx)
	switch {
	case s.isClosed():
		err = post.Errorf(post.ErrClosed, "%v", err)
	case errors.Is(cerr, context.DeadlineExceeded):
		err = fmt.Errorf("%w: %w", post.ErrTimeout, cerr)
	case cerr != nil:
		err = cerr
	case errors.As(err, &ne) && ne.Timeout():
		err = post.Errorf(post.ErrTimeout, "%v", err)
	case errors.Is(err, post.ErrMalformed), errors.Is(err, post.ErrReset), errors.Is(err, framer.ErrLineContent):
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), isReset(err):
		err = post.Errorf(post.ErrReset, "%v", err)
	case tlsalert.Sentinel(err) != nil:
		err = fmt.Errorf("%w: %w", tlsalert.Sentinel(err), err)
	case quicSentinel(err) != nil:
		err = fmt.Errorf("%w: %w", quicSentinel(err), err)
	}
	return &post.OpError{Op: op, Stack: s.name, Path: s.path.String(), Err: err}
}

// Close flushes what is pending and closes the connection. An ordinary
// server gives no confirmation of receipt beyond TCP's own, so Close
// returns nil once the data is written.
func (s *stream) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.linger)
	defer cancel()
	return s.CloseContext(ctx)
}

// CloseContext is Close bounded by ctx.
func (s *stream) CloseContext(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		ferr := s.lockWrite(ctx)
		if ferr == nil {
			ferr = during(ctx, s.c.SetWriteDeadline, s.w.Flush)
			s.unlockWrite()
		}
		if ferr != nil {
			err = s.ioError(ctx, "close", ferr) // before closed, which would mask why
		}
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if ferr != nil {
			s.reset()
		}
		cerr := s.c.Close()
		if s.close != nil {
			cerr = errors.Join(cerr, s.close(ferr != nil))
		}
		if err == nil && cerr != nil {
			err = s.ioError(ctx, "close", cerr)
		}
	})
	return err
}

// Abort closes at once without flushing.
func (s *stream) Abort(error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.reset()
		s.c.Close()
		if s.close != nil {
			s.close(true)
		}
	})
}

// reset makes the coming close of a TCP connection an RST, so the server
// sees the abort.
func (s *stream) reset() {
	c := any(s.c)
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
}

// AbortMessage abandons the outbound message: with a framing that can
// mark it (length prefix) the transient goes on, otherwise it is aborted.
func (s *stream) AbortMessage(ctx context.Context) error {
	if a, ok := s.w.(framer.MessageAborter); ok {
		if err := s.lockWrite(ctx); err != nil {
			return s.ioError(ctx, "abort message", err)
		}
		defer s.unlockWrite()
		return s.ioError(ctx, "abort message", during(ctx, s.c.SetWriteDeadline, a.AbortMessage))
	}
	err := post.Errorf(post.ErrReset, "%s: the framing cannot abandon a message, transient aborted", s.name)
	s.Abort(err)
	return err
}
