package tcp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/internal/sockerr"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// dialer holds what a client transient needs to fork.
type dialer struct {
	stack  Stack
	remote netip.AddrPort
	cfg    psi.Config
	tls    *tls.Config
	// forking holds the forks of a root and its forks that are dialling,
	// at most maxForking, so that a burst of forks waits here instead of
	// crowding the listener's handshake quota.
	forking chan struct{}
	// live is the idle timeout the root agreed liveness frames for, zero
	// if it did not; its forks keep it. Set by the root's dial.
	live time.Duration
}

// maxForking bounds the forks of one root dialling at once.
const maxForking = 4

func (d *dialer) dial(ctx context.Context, kind byte, parent token, local netip.AddrPort) (*transient, error) {
	path := d.remote.String()
	op := "dial"
	if kind == kindFork {
		op = "fork"
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap(op, path, err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Handshake())
	defer cancel()

	var nd net.Dialer
	nd.KeepAliveConfig, nd.KeepAlive = d.stack.keepAlive(&d.cfg)
	if local.IsValid() {
		nd.LocalAddr = net.TCPAddrFromAddrPort(local)
	}
	c, err := nd.DialContext(ctx, "tcp", path)
	if err != nil {
		if local.IsValid() {
			err = sockerr.Bind(err) // the Local cannot be bound
		}
		return nil, wrap(op, path, err)
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	cc := &corkConn{Conn: c}
	tc := tls.Client(cc, d.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, wrap(op, path, err)
	}

	dl := deadline{set: c.SetDeadline}
	stop, _ := dl.watch(ctx)
	h := clientHello{kind: kind, assoc: d.cfg.Association, parent: parent}
	offer := d.stack.liveIdle(&d.cfg)
	if kind == kindRoot && offer > 0 {
		h.askLive(offer)
	}
	asked := offer > 0 && (kind == kindRoot || d.live > 0)
	_, err = tc.Write(h.marshal())
	var buf [serverLiveLen]byte
	n := serverHelloLen
	if err == nil {
		_, err = io.ReadFull(tc, buf[:n])
	}
	if err == nil && asked && serverHelloRest(buf[:n]) > 0 {
		_, err = io.ReadFull(tc, buf[n:])
		n = len(buf)
	}
	stop()
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("%w: peer closed the connection during the hello", post.ErrReset)
		}
		return nil, wrap(op, path, ctxErr(ctx, err))
	}
	sh, err := parseServerHello(buf[:n])
	if err == nil {
		err = sh.err()
	}
	if err != nil {
		return nil, wrap(op, path, err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return nil, wrap(op, path, err)
	}
	live := min(sh.liveIdle(), offer)
	if kind == kindRoot {
		d.live = live
	}
	t := newTransient(&d.stack, &d.cfg, cc, tc, d.cfg.Association, sh.token, false, nil, live)
	t.dialer = d
	ok = true
	t.log.Debug("tcp: transient open", "kind", kind)
	return t, nil
}

// transient is one TLS connection carrying framed messages.
type transient struct {
	conn   *tls.Conn
	cork   *corkConn    // under conn
	tcp    *net.TCPConn // nil if the conn is not TCP
	local  netip.AddrPort
	remote netip.AddrPort
	assoc  [16]byte
	token  token // peers fork from this transient by naming it
	path   string
	log    *slog.Logger
	linger time.Duration
	live   time.Duration // idle timeout of the agreed liveness frames; 0 if none
	beat   []byte        // the framing's heartbeat, if live

	dialer  *dialer   // client side
	ln      *listener // server side
	uncount func()    // server side: releases its count in ln.conns
	peerPin *psi.Pin  // the peer's key, which forks must present too
	peer    psi.Identity

	r  framer.MessageReader
	rd deadline

	wmu    sync.Mutex
	w      framer.MessageWriter
	werr   error // sticky write failure
	wEnded bool  // close_notify and FIN sent after the peer's end
	wd     deadline
	pend   peerEndWatch // cuts a write blocked on a peer that closed
	gone   atomic.Bool  // pend cut a write: the peer's FIN arrived

	fmu      sync.Mutex
	forkCh   chan *transient // server side: forks awaiting AcceptFork
	forkRoom chan struct{}   // places in forkCh, taken at the hello
	forkWait atomic.Int32    // forks waiting for a place

	closeOnce sync.Once
	closed    atomic.Pointer[error] // why the transient closed
	peerEnded atomic.Bool           // the peer closed its side in order
	noFork    bool                  // the policy prohibits forking
	closeRes  chan struct{}         // closed once CloseContext has closeErr
	closeErr  error
	done      chan struct{}
	traced    chan struct{} // closed once the trace is written out; nil untraced

	events bool                            // Config.Events: SetEventHandler samples TCP_INFO
	evh    atomic.Pointer[func(psi.Event)] // the psi.EventSource handler
	evOnce atomic.Bool                     // the sampler was started
}

var (
	_ psi.Transient      = (*transient)(nil)
	_ psi.ContextCloser  = (*transient)(nil)
	_ psi.Aborter        = (*transient)(nil)
	_ psi.MessageAborter = (*transient)(nil)
	_ psi.EventSource    = (*transient)(nil)
)

// lingerTime is the bound on Close: Config.Linger, else Stack.Linger, else
// psi.DefaultLinger.
func lingerTime(s *Stack, cfg *psi.Config) time.Duration {
	switch {
	case cfg.Linger > 0:
		return cfg.Linger
	case s.Linger > 0:
		return s.Linger
	}
	return psi.DefaultLinger
}

// newTransient makes a transient on cc. A server's passes the func that
// uncounts it from its source's quota (nil if refused); a client's nil.
// live is the idle timeout liveness frames were agreed for, or zero.
func newTransient(s *Stack, cfg *psi.Config, cc *corkConn, tc *tls.Conn, assoc [16]byte, tok token, server bool, uncount func(), live time.Duration) *transient {
	raw := cc.Conn
	fr := s.framer()
	t := &transient{
		conn:   tc,
		cork:   cc,
		local:  addrPort(raw.LocalAddr()),
		remote: addrPort(raw.RemoteAddr()),
		assoc:  assoc,
		token:  tok,
		linger: lingerTime(s, cfg),
		r:      fr.NewReader(tc, cfg.Limit()),
		w:      fr.NewWriter(tc),
		done:   make(chan struct{}),

		uncount: uncount,

		closeRes: make(chan struct{}),
	}
	t.tcp, _ = raw.(*net.TCPConn)
	t.noFork = cfg.Disabled.Has(psi.Fork)
	t.events = cfg.Events
	if t.tcp != nil {
		var l *liveness
		if hb, ok := fr.(framer.Heartbeater); ok && live > 0 {
			t.live, t.beat = live, hb.Heartbeat()
			l = newLiveness(time.Now(), live, s.liveEvery(cfg, live))
		}
		go t.watchPeer(cfg.Idle(), l)
	}
	t.path = t.local.String() + "->" + t.remote.String()
	t.log = s.logger(cfg).With("stack", name, "path", t.path)
	startTrace(cfg, t, server)
	t.rd.set = raw.SetReadDeadline
	t.wd.set = raw.SetWriteDeadline
	if t.tcp != nil && finReporting {
		t.pend.ended = func() bool { return peerFinished(t.tcp) }
		t.pend.cut = func() {
			t.gone.Store(true)
			t.wd.arm(aLongTimeAgo)
		}
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		p := psi.PinCertificate(certs[0])
		t.peerPin = &p
		t.peer = cfg.Security.PeerIdentity(certs, server)
	}
	return t
}

func newToken() token {
	var t token
	rand.Read(t[:])
	return t
}

func (t *transient) Stack() string { return name }

// PeerIdentity returns what the TLS handshake verified about the peer.
func (t *transient) PeerIdentity() psi.Identity { return t.peer }

// Resumed reports whether the connection resumed a TLS session from a
// ticket.
func (t *transient) Resumed() bool { return t.conn.ConnectionState().DidResume }

func (t *transient) Features() psi.Features    { return Features }
func (t *transient) Association() [16]byte     { return t.assoc }
func (t *transient) Paths() []post.Path        { return []post.Path{t.Path()} }
func (t *transient) String() string            { return name + " " + t.path }
func (t *transient) isClosed() bool            { return t.closed.Load() != nil }
func (t *transient) closedErr(op string) error { return wrap(op, t.path, *t.closed.Load()) }

// Path returns the connection's addresses and, on Linux, the kernel's
// RTT, MTU, loss and delivery-rate estimates.
func (t *transient) Path() post.Path {
	p := post.Path{Local: t.local, Remote: t.remote, Active: !t.isClosed()}
	if t.tcp != nil && p.Active {
		fillPathInfo(t.tcp, &p)
	}
	return p
}

// ctxErr turns an I/O error caused by ctx into the context's error. The
// conn's deadline may fire just before ctx's own timer.
func ctxErr(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	switch cerr := ctxend.Err(ctx); {
	case errors.Is(cerr, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", post.ErrTimeout, cerr)
	case cerr != nil:
		return cerr
	}
	return err
}

// closeCut is Close's error when ctx ended before the peer confirmed
// everything: it wraps post.ErrTimeout and ctx's error, whether ctx's
// timer or the socket's deadline fired first.
func closeCut(ctx context.Context, what string) error {
	return fmt.Errorf("%w: %s: %w", post.ErrTimeout, what, ctxend.Err(ctx))
}

// WriteMessage appends p to the current message and flushes at its end. A
// large p is written from the caller's buffer without being copied whole.
// If ctx ends while data is being written, the stream is left inside a
// frame, so the transient can no longer send.
func (t *transient) WriteMessage(ctx context.Context, p []byte, end bool, opts *psi.WriteOptions) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.isClosed() {
		return t.closedErr("send")
	}
	if t.werr != nil {
		return t.werr
	}
	if t.peerEnded.Load() || t.gone.Load() {
		return errPeerClosed(t.path)
	}
	// A deadline already past would fail the write on the socket, and
	// crypto/tls takes any failed write, a timeout too, for the end of
	// the connection's sending: answer it here, with nothing written.
	if err := ctxend.Err(ctx); err != nil {
		return wrap("send", t.path, err)
	}
	stop, ok := t.wd.watch(ctx)
	if !ok {
		return t.closedErr("send")
	}
	t.watchEnd()
	t.cork.cork()
	err := t.w.WriteMessage(p, end)
	if err == nil && (opts == nil || !opts.More) {
		// Parts go out without waiting for the end of their message.
		err = t.w.Flush()
	}
	if cerr := t.cork.uncork(); err == nil {
		err = cerr
	}
	t.unwatchEnd()
	stop()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, framer.ErrLineContent):
		return wrap("send", t.path, err) // nothing was written
	case t.isClosed():
		return t.closedErr("send")
	case t.gone.Load():
		t.werr = errPeerClosed(t.path)
		return t.werr
	}
	t.werr = wrap("send", t.path, ctxErr(ctx, err))
	return t.werr
}

// errPeerClosed is a send's error once the peer has closed.
func errPeerClosed(path string) error {
	return wrap("send", path, post.Errorf(post.ErrClosed, "the peer closed the transient"))
}

// watchEnd starts cutting the write about to begin if the peer's FIN
// arrives while it is blocked (Linux); unwatchEnd stops.
func (t *transient) watchEnd() {
	if t.pend.ended != nil {
		t.pend.begin()
	}
}

func (t *transient) unwatchEnd() {
	if t.pend.ended != nil {
		t.pend.end()
	}
}

// Flush sends messages held back by WriteOptions.More.
func (t *transient) Flush(ctx context.Context) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.isClosed() {
		return t.closedErr("send")
	}
	if t.werr != nil {
		return t.werr
	}
	if t.gone.Load() {
		return errPeerClosed(t.path)
	}
	if err := ctxend.Err(ctx); err != nil {
		return wrap("send", t.path, err) // as in WriteMessage
	}
	stop, ok := t.wd.watch(ctx)
	if !ok {
		return t.closedErr("send")
	}
	t.watchEnd()
	t.cork.cork()
	err := t.w.Flush()
	if cerr := t.cork.uncork(); err == nil {
		err = cerr
	}
	t.unwatchEnd()
	stop()
	if err != nil && !t.isClosed() && t.gone.Load() {
		t.werr = errPeerClosed(t.path)
		return t.werr
	}
	if err != nil && !t.isClosed() {
		t.werr = wrap("send", t.path, ctxErr(ctx, err))
		return t.werr
	}
	return err
}

// ReadMessage reads from the current inbound message. It returns io.EOF
// when the peer closed the stream between messages. A malformed or
// over-limit message from the peer closes the transient.
func (t *transient) ReadMessage(ctx context.Context, p []byte) (int, bool, error) {
	if t.isClosed() {
		return 0, false, t.closedErr("receive")
	}
	if err := ctx.Err(); err != nil {
		return 0, false, wrap("receive", t.path, err)
	}
	stop, _ := t.rd.watch(ctx)
	n, end, err := t.r.ReadMessage(p)
	stop()
	if (end || err == io.EOF) && t.tcp != nil && t.cork.drained.Swap(false) {
		// Everything the peer sent is read: acknowledge it now, not after
		// the delayed-ACK timer, so a peer closing after its last message
		// returns within about a round trip.
		quickAck(t.tcp)
	}
	if err != nil && t.cork.eof.Load() && !t.isClosed() &&
		(err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, post.ErrMalformed)) {
		// The stream ended in a FIN without close_notify: the peer's
		// process died or the connection was cut, with what it still
		// meant to send. crypto/tls calls that io.EOF at a record
		// boundary; it is no orderly close.
		err = post.Errorf(post.ErrReset, "the peer's connection ended without close_notify (its process exited or the connection was cut)")
		t.close(err, false)
		return n, end, wrap("receive", t.path, err)
	}
	switch {
	case err == io.EOF:
		if !t.peerEnded.Swap(true) && !ackReporting {
			go t.endWrite()
		}
		return n, end, err
	case err == nil:
		return n, end, err
	case t.isClosed():
		return n, end, t.closedErr("receive")
	}
	err = ctxErr(ctx, err)
	if s := classify(err); s != nil {
		err = fmt.Errorf("%w: %w", s, err)
	}
	if errors.Is(err, post.ErrMalformed) || errors.Is(err, post.ErrMessageTooLarge) {
		t.log.Warn("tcp: closing transient after bad input", "err", err)
		t.close(err, false)
		return n, end, t.closedErr("receive")
	}
	return n, end, wrap("receive", t.path, err)
}

// Fork opens a new connection in the same Association. Only the dialling
// side can fork, and only with the Wine traffic class.
func (t *transient) Fork(ctx context.Context, class psi.TrafficClass) (psi.Transient, error) {
	if class != psi.Wine {
		return nil, wrap("fork", t.path, post.Errorf(post.ErrNotSupported, "traffic class %v", class))
	}
	if t.noFork {
		return nil, wrap("fork", t.path, post.Errorf(post.ErrPolicyConflict, "the policy prohibits forking"))
	}
	if t.dialer == nil {
		return nil, wrap("fork", t.path, post.Errorf(post.ErrNotSupported, "a TCP server cannot dial back"))
	}
	if t.isClosed() {
		return nil, t.closedErr("fork")
	}
	local := t.dialer.cfg.Local
	if local.IsValid() {
		local = netip.AddrPortFrom(local.Addr(), 0)
	}
	select {
	case t.dialer.forking <- struct{}{}:
	case <-ctx.Done():
		return nil, wrap("fork", t.path, ctx.Err())
	}
	f, err := t.dialer.dial(ctx, kindFork, t.token, local)
	<-t.dialer.forking
	if err != nil {
		return nil, err
	}
	return f, nil
}

// AcceptFork returns the next fork the peer made of this transient. On the
// dialling side, which the peer cannot fork to, it blocks until ctx ends,
// the transient closes or (Linux) the peer closes or resets it. Once the
// peer closed the connection (Linux: its FIN arrived, read or not) and no
// fork is queued or between its hello and the queue, it fails with an
// error wrapping post.ErrClosed: a fork's hello is answered before the
// peer's Fork returns, so every fork made before the peer's Close is
// queued by then.
func (t *transient) AcceptFork(ctx context.Context) (psi.Transient, error) {
	// Nothing reads the connection while AcceptFork waits, so a reset by
	// the peer's Abort, or its FIN, shows only in the socket's state: look
	// at it now and then (Linux), as FSP and QUIC learn of them at once.
	var poll <-chan time.Time
	if resetReporting && t.tcp != nil {
		tk := time.NewTicker(forkResetPoll)
		defer tk.Stop()
		poll = tk.C
	}
	for {
		select {
		case f := <-t.forkCh: // nil channel on the client side
			<-t.forkRoom
			return f, nil
		case <-ctx.Done():
			return nil, wrap("accept fork", t.path, ctx.Err())
		case <-t.done:
			return nil, t.closedErr("accept fork")
		case <-poll:
			if peerReset(t.tcp) {
				return nil, wrap("accept fork", t.path, post.Errorf(post.ErrReset, "the peer reset the connection"))
			}
			// forkRoom counts the places taken and not yet accepted:
			// forks queued and forks whose hello is still under way.
			if len(t.forkRoom) == 0 && peerFinished(t.tcp) {
				return nil, wrap("accept fork", t.path, post.Errorf(post.ErrClosed, "the peer closed the transient"))
			}
		}
	}
}

// forkResetPoll is how often a waiting AcceptFork looks for a reset.
const forkResetPoll = 100 * time.Millisecond

// reserveFork takes a place in the AcceptFork queue for a fork of t by a
// peer with the given association and key, and returns the hello status.
// When the queue is full it waits for AcceptFork to make room, holding
// the forking side's Fork back, until ctx ends; at most as many forks
// wait as the queue holds, and the rest are refused with statusBusy.
func (t *transient) reserveFork(ctx context.Context, assoc [16]byte, pin *psi.Pin) byte {
	if t.isClosed() || assoc != t.assoc || (t.peerPin != nil && (pin == nil || *pin != *t.peerPin)) {
		return statusUnknown
	}
	if t.noFork {
		return statusNoFork
	}
	select {
	case t.forkRoom <- struct{}{}:
		return statusOK
	default:
	}
	if int(t.forkWait.Add(1)) > cap(t.forkRoom) {
		t.forkWait.Add(-1)
		return statusBusy
	}
	defer t.forkWait.Add(-1)
	select {
	case t.forkRoom <- struct{}{}:
		return statusOK
	case <-ctx.Done():
		return statusBusy
	case <-t.done:
		return statusUnknown
	}
}

// unreserveFork gives back a place reserveFork took for a fork that
// failed before deliverFork.
func (t *transient) unreserveFork() {
	select {
	case <-t.forkRoom:
	default:
	}
}

// deliverFork queues f for AcceptFork in the place reserveFork took.
func (t *transient) deliverFork(f *transient) bool {
	t.fmu.Lock()
	defer t.fmu.Unlock()
	if t.isClosed() {
		return false
	}
	select {
	case t.forkCh <- f:
		return true
	default:
		return false // not reached: the place was reserved
	}
}

// Close is CloseContext bounded by the linger: Config.Linger, else
// Stack.Linger, else psi.DefaultLinger.
func (t *transient) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), t.linger)
	defer cancel()
	return t.CloseContext(ctx)
}

// CloseContext flushes buffered data and waits, until ctx ends, for the
// peer's kernel to acknowledge all of it; then it sends a TLS close_notify
// and a FIN and closes the connection. It returns nil only if everything
// was acknowledged. A WriteMessage blocked in flow control is cut short,
// and its message aborted. If ctx ends first, the connection is reset and
// the error wraps post.ErrTimeout. Forks not yet accepted are closed too.
//
// Where the kernel cannot report acknowledgements (outside Linux), Close
// waits for the peer's end of stream instead.
func (t *transient) CloseContext(ctx context.Context) error {
	if !t.shut(post.ErrClosed) {
		if why := *t.closed.Load(); why != post.ErrClosed {
			return wrap("close", t.path, why) // it failed or was aborted
		}
		// Another Close is under way: report its result.
		select {
		case <-t.closeRes:
			return t.closeErr
		case <-ctx.Done():
			return wrap("close", t.path, closeCut(ctx, "another Close still waits for the peer"))
		}
	}
	err := t.finish(ctx)
	if err != nil {
		t.reset()
		err = wrap("close", t.path, err)
	} else {
		t.log.Debug("tcp: transient closed")
	}
	t.waitTrace()
	t.closeErr = err
	close(t.closeRes)
	return err
}

// Abort resets the connection at once; the peer's calls fail with an
// error wrapping post.ErrReset.
func (t *transient) Abort(err error) {
	if err == nil {
		err = errors.New("aborted")
	}
	if t.shut(err) {
		t.reset()
	}
}

// AbortMessage abandons the message being written with the framer's abort
// marker; the peer's reader gets an error wrapping post.ErrReset for it
// and then the next message. A framer without an abort marker, or a
// stream cut inside a frame, aborts the transient instead.
func (t *transient) AbortMessage(ctx context.Context) error {
	t.wmu.Lock()
	if t.isClosed() {
		t.wmu.Unlock()
		return t.closedErr("abort message")
	}
	err := t.werr
	if err == nil {
		a, ok := t.w.(framer.MessageAborter)
		if !ok {
			err = post.Errorf(post.ErrNotSupported, "the %T framing cannot abort a message", t.w)
		} else if stop, ok := t.wd.watch(ctx); !ok {
			err = post.ErrClosed
		} else {
			t.cork.cork()
			err = a.AbortMessage()
			if cerr := t.cork.uncork(); err == nil {
				err = cerr
			}
			stop()
			if err == nil {
				t.wmu.Unlock()
				return nil
			}
		}
	}
	t.wmu.Unlock()
	err = post.Errorf(post.ErrReset, "message aborted with its transient: %v", err)
	t.Abort(err)
	return wrap("abort message", t.path, err)
}

// shut marks t closed for why, wakes blocked calls and closes the forks
// not yet accepted. Only the first call does so and returns true.
func (t *transient) shut(why error) bool {
	did := false
	t.closeOnce.Do(func() {
		did = true
		if why != post.ErrClosed {
			why = fmt.Errorf("%w: %w", post.ErrClosed, why)
		}
		t.closed.Store(&why)
		close(t.done)
		if t.ln != nil {
			t.ln.forget(t.token)
		}
		if t.uncount != nil {
			t.uncount()
		}
		t.fmu.Lock()
		for len(t.forkCh) > 0 {
			(<-t.forkCh).close(errors.New("parent transient closed"), false)
		}
		t.fmu.Unlock()
		t.rd.freeze(aLongTimeAgo)
		t.wd.freeze(aLongTimeAgo)
	})
	return did
}

// finish flushes, waits for the acknowledgement of everything sent, and
// closes the connection in order.
func (t *transient) finish(ctx context.Context) error {
	raw := t.cork.Conn
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.werr != nil {
		return t.werr
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	_ = raw.SetWriteDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(aLongTimeAgo) })
	defer stop()
	defer t.discarding()()
	if !t.wEnded {
		t.cork.cork()
		err := t.w.Flush()
		if cerr := t.cork.uncork(); err == nil {
			err = cerr
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && ctxend.Err(ctx) != nil {
				return closeCut(ctx, "flush")
			}
			return err
		}
	}
	if t.tcp != nil {
		if err := t.awaitAcked(ctx); err != nil {
			return err
		}
	}
	// Orderly end: close_notify and FIN. Their loss costs nothing but a
	// clean end of stream at the peer, so they are not waited for, except
	// where acknowledgements cannot be read.
	if !t.wEnded {
		_ = t.conn.CloseWrite()
	}
	if t.tcp != nil {
		_ = t.tcp.CloseWrite()
		if _, _, ok := sendState(t.tcp); !ok {
			if err := t.awaitPeerEnd(ctx); err != nil {
				return err
			}
		}
	}
	t.discardInput()
	raw.Close()
	return nil
}

// endWrite ends our side once the peer has ended its own in order, where
// the kernel cannot report acknowledgements: our end is what the peer's
// Close waits for then. (Elsewhere it is not sent: the peer has closed,
// and would answer it with a reset.)
func (t *transient) endWrite() {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.werr != nil || t.wEnded || t.isClosed() {
		return
	}
	t.cork.cork()
	err := t.w.Flush()
	if cerr := t.cork.uncork(); err == nil {
		err = cerr
	}
	if err != nil {
		return
	}
	_ = t.conn.CloseWrite()
	if t.tcp != nil {
		_ = t.tcp.CloseWrite()
	}
	t.wEnded = true
}

// awaitAcked waits until the peer's kernel has acknowledged everything
// written, polling the send queue.
func (t *transient) awaitAcked(ctx context.Context) error {
	start := time.Now()
	wait := time.Millisecond
	for {
		n, reset, ok := sendState(t.tcp)
		switch {
		case !ok:
			return nil // awaitPeerEnd does the waiting
		case reset:
			return post.Errorf(post.ErrReset, "connection reset with %d bytes unacknowledged", n)
		case n == 0:
			return nil
		}
		select {
		case <-ctx.Done():
			return closeCut(ctx, fmt.Sprintf("%d bytes not acknowledged by the peer", n))
		case <-time.After(wait):
		}
		// Finely at first, where a reader's quick ACK lands within about
		// a round trip; then coarsely, for a slow or paused peer.
		wait = min(2*wait, 8*time.Millisecond)
		if time.Since(start) > 250*time.Millisecond {
			wait = 50 * time.Millisecond
		}
	}
}

// awaitPeerEnd reads and discards until the peer ends its stream.
func (t *transient) awaitPeerEnd(ctx context.Context) error {
	raw := t.cork.Conn
	dl, _ := ctx.Deadline()
	_ = raw.SetReadDeadline(dl)
	_, err := io.Copy(io.Discard, raw)
	if errors.Is(err, os.ErrDeadlineExceeded) && ctxend.Err(ctx) != nil {
		return closeCut(ctx, "the peer did not end its stream")
	}
	return err
}

// discarding drops what the peer sends while Close flushes and waits for
// its acknowledgements, until the returned stop: Close discards unread
// input anyway, and a peer closing at the same time waits on our receive
// window as we wait on its, neither reading, until both lingers run out.
func (t *transient) discarding() (stop func()) {
	if t.tcp == nil {
		return func() {}
	}
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		for {
			t.discardInput()
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

// discardInput drops what the peer sent that was not read, so closing
// ends with a FIN rather than a reset that could cut the peer's reading
// of our close_notify.
func (t *transient) discardInput() {
	if t.tcp != nil {
		discardUnread(t.tcp)
	}
}

// reset drops the connection with an RST.
func (t *transient) reset() {
	if t.tcp != nil {
		_ = t.tcp.SetLinger(0)
	}
	t.cork.Conn.Close()
}

// close drops t for the given reason without flushing; orderly says
// whether to send a TLS close_notify first.
func (t *transient) close(why error, orderly bool) error {
	if !t.shut(why) {
		return nil
	}
	if orderly {
		_ = t.conn.Close()
		return nil
	}
	t.cork.Conn.Close()
	return nil
}
