package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// listener accepts TCP connections, runs each handshake in its own
// goroutine under a short deadline and a per-source quota (see slots),
// and routes root transients to Accept and forks to their parent's
// AcceptFork. A full accept queue refuses new roots rather than holding
// their handshake slots.
type listener struct {
	stack Stack
	cfg   psi.Config
	tls   *tls.Config
	ln    *net.TCPListener
	addr  netip.AddrPort
	log   *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	slots  *slots
	rate   hsrate.Limiter // serve's only
	queue  chan *transient
	queued *queueShare   // roots in queue or promised a place in it
	conns  *hsrate.Conns // live transients per source

	mu     sync.Mutex
	tokens map[token]*transient

	closeOnce sync.Once
	closeErr  error
}

var _ psi.Listener = (*listener)(nil)

func newListener(s Stack, cfg psi.Config, tc *tls.Config, ln *net.TCPListener) *listener {
	l := &listener{
		stack:  s,
		cfg:    cfg,
		tls:    tc,
		ln:     ln,
		addr:   addrPort(ln.Addr()),
		slots:  newSlots(s.maxHandshakes(), s.perSource(), s.perPrefix()),
		queued: newQueueShare(s.backlog()),
		queue:  make(chan *transient, s.backlog()),
		conns:  hsrate.NewConns(s.maxConnsPerSource()).WithTotal(s.maxConns()),
		tokens: make(map[token]*transient),
	}
	l.log = s.logger(&cfg).With("stack", name, "listen", l.addr.String())
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.serve()
	return l
}

// Addr returns the listening address.
func (l *listener) Addr() netip.AddrPort { return l.addr }

// Accept returns the next root transient.
func (l *listener) Accept(ctx context.Context) (psi.Transient, error) {
	select {
	case t := <-l.queue:
		l.queued.release(t.remote.Addr())
		return t, nil
	default:
	}
	select {
	case t := <-l.queue:
		l.queued.release(t.remote.Addr())
		return t, nil
	case <-ctx.Done():
		return nil, wrap("accept", l.addr.String(), ctx.Err())
	case <-l.ctx.Done():
		return nil, wrap("accept", l.addr.String(), post.ErrClosed)
	}
}

// Close stops listening, aborts handshakes in progress and closes
// transients that Accept has not returned. Accepted transients and their
// forks stay open.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.closeErr = wrap("close", l.addr.String(), err)
		}
		l.wg.Wait()
		l.drain()
	})
	return l.closeErr
}

func (l *listener) serve() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			// Out of descriptors and the like: back off and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("tcp: accept", "err", err, "retry", backoff)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		from := addrPort(c.RemoteAddr()).Addr()
		var sl *slot
		// The handshake rate applies once the listener is busy: a burst
		// of honest dials from one address is not refused at ease.
		if l.slots.inUse() < rateAbove || l.rate.Allow(from, time.Now(), l.stack.MaxHandshakeRate) {
			sl = l.slots.acquire(from, func() { c.Close() }, func() bool { return unread(c) })
		}
		if sl == nil {
			// Over its source's rate or quota: reset at once, keep nothing.
			c.SetLinger(0)
			c.Close()
			continue
		}
		l.wg.Add(1)
		go l.handshake(c, sl)
	}
}

// rateAbove is the number of handshakes in progress from which a
// listener limits their rate (Stack.MaxHandshakeRate).
const rateAbove = 8

// handshakeTimeout bounds an incoming connection's TLS handshake and hello.
func (l *listener) handshakeTimeout() time.Duration {
	return l.stack.serverHandshakeTimeout(&l.cfg)
}

func (s *Stack) serverHandshakeTimeout(cfg *psi.Config) time.Duration {
	d := s.ServerHandshakeTimeout
	if d <= 0 {
		d = 3 * time.Second
	}
	return min(d, cfg.Handshake())
}

// handshake runs the server side of the TLS handshake and hello on c and
// hands the transient on.
func (l *listener) handshake(c *net.TCPConn, sl *slot) {
	defer l.wg.Done()
	defer l.slots.release(sl)
	log := l.log.With("remote", addrPort(c.RemoteAddr()).String())
	ctx, cancel := context.WithTimeout(l.ctx, l.handshakeTimeout())
	defer cancel()

	cc := &corkConn{Conn: c}
	cc.hs.Store(sl)
	defer cc.hs.Store(nil)
	tc := tls.Server(cc, l.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		// A refused client certificate wraps post.ErrAuthentication.
		log.Debug("tcp: handshake failed", "err", wrap("accept", c.RemoteAddr().String(), err))
		c.Close()
		return
	}
	dl := deadline{set: c.SetDeadline}
	stop, _ := dl.watch(ctx)
	t, parent, err := l.hello(ctx, cc, tc, sl)
	stop()
	if err != nil {
		log.Debug("tcp: hello failed", "err", err)
		if t != nil {
			t.close(err, false)
		} else {
			c.Close()
		}
		return
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		t.close(err, false)
		if parent == nil {
			l.queued.release(t.remote.Addr())
		} else {
			parent.unreserveFork()
		}
		return
	}
	if parent != nil {
		if !parent.deliverFork(t) {
			t.close(errors.New("parent transient closed"), false)
		}
		return
	}
	// hello reserved a place: the send never blocks.
	l.queue <- t
	if l.ctx.Err() != nil {
		// Close may have drained the queue already.
		l.drain()
	}
}

// drain closes transients that Accept has not returned.
func (l *listener) drain() {
	for {
		select {
		case t := <-l.queue:
			l.queued.release(t.remote.Addr())
			t.close(errors.New("listener closed"), false)
		default:
			return
		}
	}
}

// hello reads the client hello, makes the transient and answers. For a
// fork it also returns the parent, in whose AcceptFork queue it reserved
// a place; a fork waiting for one gives its handshake slot sl back, since
// it has proven to be the parent's peer.
func (l *listener) hello(ctx context.Context, cc *corkConn, tc *tls.Conn, sl *slot) (t, parent *transient, err error) {
	var buf [clientHelloLen]byte
	if _, err := io.ReadFull(tc, buf[:]); err != nil {
		return nil, nil, err
	}
	ch, err := parseClientHello(buf[:])
	if err != nil {
		reply := serverHello{status: statusBad}
		tc.Write(reply.marshal())
		return nil, nil, err
	}
	// Count the transient against its source's quota, or refuse it; shut
	// uncounts it however it ends.
	uncount := l.conns.Acquire(addrPort(cc.Conn.RemoteAddr()).Addr())
	t = newTransient(&l.stack, &l.cfg, cc, tc, ch.assoc, newToken(), true, uncount, l.liveFor(&ch))
	t.ln = l
	t.forkCh = make(chan *transient, l.stack.maxUnacceptedForks())
	t.forkRoom = make(chan struct{}, cap(t.forkCh))
	status := byte(statusOK)
	if uncount == nil {
		// A root past the quota is refused as on FSP and QUIC; a fork
		// (its own TCP connection here) waits for room elsewhere.
		status = statusBusy
		if ch.kind == kindRoot {
			status = statusQuota
		}
	} else if ch.kind == kindRoot {
		// Promise a place in the accept queue, or refuse now.
		if !l.queued.reserve(t.remote.Addr()) {
			status = statusBusy
		}
	}
	if ch.kind == kindFork && uncount != nil {
		l.mu.Lock()
		parent = l.tokens[ch.parent]
		l.mu.Unlock()
		status = statusUnknown
		if parent != nil {
			l.slots.release(sl)
			// Wait for room with a quarter of the time left to spare
			// for the reply that says there is none.
			wctx := ctx
			if d, ok := ctx.Deadline(); ok {
				var cancel context.CancelFunc
				wctx, cancel = context.WithDeadline(ctx, d.Add(-time.Until(d)/4))
				defer cancel()
			}
			status = parent.reserveFork(wctx, ch.assoc, t.peerPin)
		}
	}
	if status == statusOK {
		l.mu.Lock()
		l.tokens[t.token] = t
		l.mu.Unlock()
	}
	reply := serverHello{status: status, token: t.token}
	if t.live > 0 {
		reply.idle = millis(t.live)
	}
	if status != statusOK {
		reply = serverHello{status: status}
	}
	if _, err := tc.Write(reply.marshal()); err != nil {
		switch {
		case status == statusOK && parent == nil:
			l.queued.release(t.remote.Addr())
		case status == statusOK:
			parent.unreserveFork()
		}
		return t, nil, err
	}
	if status != statusOK {
		return t, nil, reply.err()
	}
	return t, parent, nil
}

// liveFor returns the idle timeout of the liveness frames agreed with a
// client hello: for a root the smaller of ours and the one it asks for,
// if both ends take them; for a fork its parent's.
func (l *listener) liveFor(ch *clientHello) time.Duration {
	if ch.kind == kindFork {
		l.mu.Lock()
		defer l.mu.Unlock()
		if p := l.tokens[ch.parent]; p != nil {
			return p.live
		}
		return 0
	}
	own, ask := l.stack.liveIdle(&l.cfg), ch.liveIdle()
	if own == 0 || ask == 0 {
		return 0
	}
	return min(own, ask)
}

// forget drops a closed transient's fork token.
func (l *listener) forget(tok token) {
	l.mu.Lock()
	delete(l.tokens, tok)
	l.mu.Unlock()
}
