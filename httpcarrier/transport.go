package httpcarrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/assoccache"
	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/post"
)

// Transport is an http.RoundTripper that carries each request on its own
// fork of one root Carrier per origin (host:port of the request URL). It
// is safe for concurrent use; the zero value is usable.
type Transport struct {
	// Config configures the root Carriers (security, policy, stacks). Its
	// IdleTimeout and Lazy fields are ignored: the Transport manages idle
	// roots itself.
	Config *carrier.Config
	// Remote maps an origin ("host:port") to the Remote to initiate;
	// nil means post.RemoteName.
	Remote func(origin string) post.Remote
	// IdleTimeout closes a root Carrier with no request for that long;
	// zero means 90 s.
	IdleTimeout time.Duration
	// DialTimeout bounds initiating a root Carrier; zero means 30 s.
	DialTimeout time.Duration
	// MaxResponseHeaderBytes bounds a response head or trailer block;
	// zero means DefaultMaxHeaderBytes.
	MaxResponseHeaderBytes int
	// MaxConcurrentRequests is the number of requests the origin is
	// assumed to serve at once on a root Carrier (its slots) until it
	// says (a Server announces its MaxConcurrentRequests on each root);
	// zero means DefaultMaxConcurrentRequests (256), negative no bound
	// (requests past the origin's wait at the origin, in arrival order).
	// A request takes a slot before its fork and holds it until its
	// transaction ends; past the slots it waits, and the slots are shared
	// between the prefixes of the clients the requests are made for
	// (WithClient): with free of n slots free, a prefix holding h > 0
	// takes another only while h*n < 2*free*free and free > n/4 (a
	// reserve for prefixes holding none), and a freed slot goes to the
	// waiting prefix holding fewest. So a prefix alone gets half of them,
	// and a client of a prefix holding none is served at once unless
	// every slot is held by others (n/4+1 prefixes at least: 65 of 256).
	// Requests not marked with a client are not limited by the share.
	MaxConcurrentRequests int
	Logger                *slog.Logger

	mu     sync.Mutex
	conns  map[string]*rootConn
	pools  map[string]*slotPool // per origin: its slots
	sizes  map[string]int       // per origin with a root or a pool: the slots it announced
	assocs assoccache.Cache     // per origin, kept across roots: the race winner is cached

	closingMu sync.Mutex
	closing   map[chan struct{}]struct{} // Carriers closing in the background (closing.go)
}

// rootConn is one origin's root Carrier and its transactions.
type rootConn struct {
	t        *Transport
	origin   string
	ready    chan struct{} // closed when root or err is set
	root     *carrier.Carrier
	err      error
	inflight int
	draining bool // goaway received, closed idle, or failed: no new forks
	idle     *time.Timer
	forks    []*carrier.Carrier // idle forks, for the next requests
}

func (t *Transport) log() *slog.Logger {
	if t.Logger != nil {
		return t.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (t *Transport) maxHeader() int {
	if t.MaxResponseHeaderBytes > 0 {
		return t.MaxResponseHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

// origin returns the pool key of u: host:port, with the scheme's default
// port.
func origin(req *http.Request) (string, error) {
	if req.URL == nil || req.URL.Host == "" {
		return "", post.Errorf(post.ErrInvalid, "request URL has no host")
	}
	host, port := req.URL.Hostname(), req.URL.Port()
	if port == "" {
		switch req.URL.Scheme {
		case "https":
			port = "443"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// RoundTrip sends req on a new fork and returns the response once its
// head arrived; the body streams from the fork. Cancelling the request's
// context, or closing the body before its end, aborts the fork.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	key, err := origin(req)
	if err != nil {
		closeBody()
		return nil, err
	}
	head, err := appendRequestHead(nil, req)
	if err != nil {
		closeBody()
		return nil, err
	}
	ctx := req.Context()
	// An idle fork from an earlier request may have been closed by the
	// server meanwhile; only a request that can be sent again takes one.
	reusable := idempotent(req) && (noBody(req.Body) || req.GetBody != nil) && !tunnelRequest(req)
	reqBody := req.Body
	closeBody = func() {
		if reqBody != nil {
			reqBody.Close()
		}
	}
	s, err := t.acquire(ctx, key)
	if err != nil {
		closeBody()
		return nil, err
	}
	kept := false // the response's transaction holds s
	defer func() {
		if !kept {
			s.release()
		}
	}()
	for attempt := 0; ; attempt++ {
		rc, err := t.get(ctx, key)
		if err != nil {
			closeBody()
			return nil, err
		}
		var fork *carrier.Carrier
		if reusable && attempt == 0 {
			fork = t.takeIdle(rc)
		}
		reused := fork != nil
		if fork == nil {
			t.makeRoom(rc)
			if fork, err = rc.root.Fork(ctx); err != nil {
				// Nothing was sent: a fresh root may take it.
				t.release(rc, true)
				if attempt > 0 || ctxend.Err(ctx) != nil {
					closeBody()
					return nil, fmt.Errorf("httpcarrier: fork to %s: %w", key, err)
				}
				t.log().Debug("fork failed; new root", "origin", key, "err", err)
				continue
			}
		}
		tx := &clientTx{t: t, rc: rc, fork: fork, req: req, body: reqBody, slot: s}
		tx.stop = context.AfterFunc(ctx, func() { fork.Abort() })
		resp, stale, err := tx.roundTrip(ctx, head, reused)
		if err == nil {
			kept = true
			return resp, nil
		}
		tx.slot = nil // RoundTrip gives it back, or the next attempt uses it
		tx.finish(false)
		// The deadline may have failed the read (TCP sets it on the
		// socket) before ctx's timer marked it done: that is no stale
		// fork to retry on.
		if cerr := ctxend.Err(ctx); cerr != nil {
			closeBody()
			return nil, cerr
		}
		if stale && attempt == 0 {
			t.log().Debug("idle fork was gone; retrying on a new one", "origin", key, "err", err)
			if !noBody(reqBody) {
				if reqBody, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
			continue
		}
		closeBody()
		return nil, err
	}
}

// idempotent reports whether req may be sent twice (RFC 9110 9.2.2).
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// clientTx is one request/response exchange on its fork.
type clientTx struct {
	t     *Transport
	rc    *rootConn
	fork  *carrier.Carrier
	req   *http.Request
	body  io.ReadCloser // the request body of this attempt
	slot  *slot         // released when the transaction ends
	stop  func() bool
	once  sync.Once
	wrote chan error // the request writer's result
	// bodyErr is set when the request body failed, before the message
	// is abandoned.
	bodyErr atomic.Pointer[error]
	keep    bool // the fork may carry another transaction
}

// roundTrip sends the request and reads the response head. stale reports
// that a reused fork failed before any response arrived: the server had
// closed it, and a new fork may take the request.
func (tx *clientTx) roundTrip(ctx context.Context, head []byte, reused bool) (resp *http.Response, stale bool, err error) {
	tx.wrote = make(chan error, 1)
	tx.keep = true
	// An Upgrade or CONNECT request's message stays open after its head:
	// if the server switches, the client's bytes follow in it.
	var mw *carrier.MessageWriter
	var wctx context.Context
	var wstop context.CancelFunc
	if tunnelRequest(tx.req) {
		tx.keep = false
		wctx, wstop = context.WithCancel(ctx)
		if mw, err = tx.fork.NewMessageWriter(wctx, post.Properties{}); err == nil {
			_, err = mw.Write(head)
		}
		if err != nil {
			wstop()
			return nil, false, fmt.Errorf("httpcarrier: writing request: %w", err)
		}
		defer func() {
			if mw != nil { // not handed to a tunnel
				wstop()
			}
		}()
	} else if noBody(tx.body) && len(tx.req.Trailer) == 0 {
		tx.wrote <- tx.fork.SendMsg(ctx, &post.Message{Content: head})
	} else {
		go func() {
			headOut, err := tx.writeBody(ctx, head)
			tx.wrote <- err
			if err != nil && !headOut {
				// The server never saw the request, so no response
				// will come: the wait for one ends with the abort.
				tx.fork.Abort()
			}
		}()
	}
	limit := tx.t.maxHeader()
	for n := 0; ; n++ {
		hm, err := readHead(ctx, tx.fork, limit)
		if err != nil {
			stale = reused && n == 0
			select {
			case werr := <-tx.wrote:
				if werr != nil {
					return nil, stale, fmt.Errorf("httpcarrier: writing request: %w (response: %v)", werr, err)
				}
			default:
			}
			return nil, stale, fmt.Errorf("httpcarrier: reading response: %w", err)
		}
		resp, err = parseResponseHead(hm.head, tx.req)
		if err != nil {
			return nil, false, err
		}
		if mw != nil && switched(tx.req, resp) {
			tun := newTunnel(ctx, tx.fork, hm.rest, hm.end, mw, wctx, wstop)
			tun.onClose = tx.endTunnel
			mw = nil
			resp.Body = tun
			resp.ContentLength = 0 // no body: a stream (as net/http's Transport says)
			return resp, false, nil
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, false, post.Errorf(post.ErrMalformed, "httpcarrier: 101 to a request that did not ask for an upgrade")
		}
		if resp.StatusCode < 200 {
			if !hm.end || len(hm.rest) > 0 || n >= 16 {
				return nil, false, post.Errorf(post.ErrMalformed, "httpcarrier: bad informational response")
			}
			if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.Got1xxResponse != nil {
				if err := tr.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, false, err
				}
			}
			continue
		}
		if berr := tx.bodyErr.Load(); berr != nil {
			// The body failed before the response came: the request
			// was not sent whole, whatever the server made of its
			// abandoned message (as net/http).
			return nil, false, fmt.Errorf("httpcarrier: writing request: %w", *berr)
		}
		if mw != nil {
			// Not switched: the request message ends with its head.
			tx.wrote <- mw.Close()
			wstop()
			mw = nil
		}
		if hm.end && len(hm.rest) == 0 && resp.ContentLength < 0 {
			resp.ContentLength = 0
		}
		b := &body{c: tx.fork, ctx: ctx, pre: hm.rest, end: hm.end, want: resp.ContentLength}
		if tx.req.Method == http.MethodHead {
			b.want = -1 // the length of the body a GET would have
		}
		if resp.Trailer != nil {
			b.atEnd = func() error { return tx.readTrailers(b.ctx, resp) }
		}
		b.onDone = tx.finish
		resp.Body = b
		return resp, false, nil
	}
}

// writeBody sends the request message in parts: the head, then the body
// as it is read; the end of the message ends the body. Declared trailers
// follow as a second message. headOut reports whether the head was
// handed to the fork (it waits for the first part of the body).
func (tx *clientTx) writeBody(ctx context.Context, head []byte) (headOut bool, err error) {
	req := tx.req
	if tx.body == nil {
		tx.body = http.NoBody
	}
	defer tx.body.Close()
	w, err := tx.fork.NewMessageWriter(ctx, post.Properties{})
	if err != nil {
		return false, err
	}
	// The head goes out with the first part of the body.
	buf := make([]byte, max(partSize, len(head)+4096))
	n := copy(buf, head)
	var sent int64
	for {
		m, rerr := tx.body.Read(buf[n:])
		sent += int64(m)
		n += m
		if rerr == io.EOF {
			break // what is left goes with the end of the message
		}
		if rerr != nil {
			return headOut, tx.bodyFailed(w, fmt.Errorf("httpcarrier: reading request body: %w", rerr))
		}
		if n > 0 {
			headOut = true
			if _, err := w.Write(buf[:n]); err != nil {
				return true, err
			}
			n = 0
		}
	}
	if req.ContentLength > 0 && sent != req.ContentLength {
		return headOut, tx.bodyFailed(w, fmt.Errorf("httpcarrier: ContentLength=%d with Body length %d", req.ContentLength, sent))
	}
	if _, err := w.WriteLast(buf[:n]); err != nil {
		return true, err
	}
	if len(req.Trailer) > 0 {
		return true, tx.fork.Send(ctx, trailerBlock(req.Trailer))
	}
	return true, nil
}

// bodyFailed abandons the request message after the body's own
// failure (its Read, or a length other than its ContentLength), noting
// it first, so that a response the abandoned message brought on finds it.
func (tx *clientTx) bodyFailed(w *carrier.MessageWriter, err error) error {
	tx.bodyErr.Store(&err)
	w.Abort()
	return err
}

// readTrailers runs at the end of a response body whose head declared
// trailers: the trailer message follows the response message.
func (tx *clientTx) readTrailers(ctx context.Context, resp *http.Response) error {
	b, err := readSmall(ctx, tx.fork, tx.t.maxHeader())
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("httpcarrier: reading trailers: %w", err)
	}
	tr, err := parseTrailers(b)
	if err != nil {
		return err
	}
	for k, v := range tr {
		resp.Trailer[k] = v
	}
	return nil
}

// finish ends the transaction: after the whole exchange, the fork waits
// in the root's pool for the next request; otherwise it is aborted.
func (tx *clientTx) finish(clean bool) {
	tx.once.Do(func() {
		stopped := tx.stop()
		if clean && stopped {
			select {
			case err := <-tx.wrote:
				clean = err == nil
			default:
				clean = false // the request is still being sent
			}
		}
		if !clean || !stopped || !tx.keep || !tx.t.putIdle(tx.rc, tx.fork) {
			if clean && stopped {
				tx.t.closeLater(tx.fork)
			} else {
				tx.fork.Abort()
			}
		}
		tx.t.release(tx.rc, false)
		tx.slot.release()
	})
}

// endTunnel ends the transaction of a switched fork, which the tunnel
// has closed.
func (tx *clientTx) endTunnel() {
	tx.once.Do(func() {
		tx.stop()
		tx.t.release(tx.rc, false)
		tx.slot.release()
	})
}

// maxIdleForks bounds the idle forks kept per root.
const maxIdleForks = 64

// takeIdle returns an idle fork of rc, or nil.
func (t *Transport) takeIdle(rc *rootConn) *carrier.Carrier {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(rc.forks) > 0 {
		f := rc.forks[len(rc.forks)-1]
		rc.forks = rc.forks[:len(rc.forks)-1]
		if f.State() != carrier.Closed {
			return f
		}
	}
	return nil
}

// putIdle keeps f for the next request on rc; false if rc takes no more.
func (t *Transport) putIdle(rc *rootConn, f *carrier.Carrier) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rc.draining || len(rc.forks) >= maxIdleForks {
		return false
	}
	rc.forks = append(rc.forks, f)
	return true
}

// get returns origin's root Carrier with a transaction counted on it,
// initiating one if there is none.
func (t *Transport) get(ctx context.Context, key string) (*rootConn, error) {
	for {
		t.mu.Lock()
		rc := t.conns[key]
		if rc == nil {
			rc = &rootConn{t: t, origin: key, ready: make(chan struct{})}
			if t.conns == nil {
				t.conns = map[string]*rootConn{}
			}
			t.conns[key] = rc
			go t.dial(rc)
		}
		t.mu.Unlock()
		select {
		case <-rc.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		t.mu.Lock()
		switch {
		case rc.err != nil:
			t.mu.Unlock()
			return nil, rc.err
		case rc.draining:
			t.mu.Unlock()
			continue // the pool no longer holds it
		}
		rc.inflight++
		if rc.idle != nil {
			rc.idle.Stop()
			rc.idle = nil
		}
		t.mu.Unlock()
		return rc, nil
	}
}

// dial initiates rc's root Carrier on the origin's Association, so that a
// later root reuses the stack that won the first race.
func (t *Transport) dial(rc *rootConn) {
	d := t.DialTimeout
	if d <= 0 {
		d = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var cfg carrier.Config
	if t.Config != nil {
		cfg = *t.Config
	}
	cfg.IdleTimeout, cfg.Lazy = 0, false
	if a := t.assocs.Get(rc.origin); a != nil {
		cfg.Association = a
	}
	remote := post.RemoteName(rc.origin)
	if t.Remote != nil {
		remote = t.Remote(rc.origin)
	}
	root, err := carrier.Initiate(ctx, remote, &cfg)
	if err == nil {
		if err = root.Send(ctx, preface); err != nil {
			root.Abort()
		}
	}
	t.mu.Lock()
	if err != nil {
		rc.err = fmt.Errorf("httpcarrier: %s: %w", rc.origin, err)
		if t.conns[rc.origin] == rc {
			delete(t.conns, rc.origin)
			t.forgetSlotsLocked(rc.origin)
		}
	} else {
		rc.root = root
		t.assocs.Add(rc.origin, root.Association())
	}
	close(rc.ready)
	t.mu.Unlock()
	if err != nil {
		t.log().Debug("root carrier failed", "origin", rc.origin, "err", err)
		return
	}
	t.log().Debug("root carrier", "origin", rc.origin, "stack", root.Stack())
	go t.watch(rc)
}

// watch reads the root Carrier: a goaway message or the root's end stops
// new forks on it.
func (t *Transport) watch(rc *rootConn) {
	for {
		m, err := readSmall(context.Background(), rc.root, 64)
		if err != nil {
			t.log().Debug("root carrier ended", "origin", rc.origin, "err", err)
			t.drain(rc)
			return
		}
		if string(m) == string(goAway) {
			t.log().Debug("origin going away", "origin", rc.origin)
			t.drain(rc)
		}
		if n, ok := parseSlots(m); ok {
			t.setSlots(rc, n)
		}
	}
}

// drain takes rc out of the pool; it closes once idle.
func (t *Transport) drain(rc *rootConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.drainLocked(rc)
}

func (t *Transport) drainLocked(rc *rootConn) {
	if !rc.draining {
		rc.draining = true
		if t.conns[rc.origin] == rc {
			delete(t.conns, rc.origin)
			t.forgetSlotsLocked(rc.origin)
		}
	}
	for _, f := range rc.forks {
		t.closeLater(f)
	}
	rc.forks = nil
	if rc.inflight == 0 && rc.root != nil {
		if rc.idle != nil {
			rc.idle.Stop()
			rc.idle = nil
		}
		t.closeLater(rc.root)
	}
}

// release ends a transaction on rc; failed drains the root.
func (t *Transport) release(rc *rootConn, failed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rc.inflight--
	if failed || rc.draining {
		t.drainLocked(rc)
		return
	}
	if rc.inflight == 0 {
		d := t.IdleTimeout
		if d <= 0 {
			d = 90 * time.Second
		}
		rc.idle = time.AfterFunc(d, func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if rc.inflight == 0 && !rc.draining {
				t.drainLocked(rc)
			}
		})
	}
}

// CloseIdleConnections closes the root Carriers with no request in
// flight and drains the others; http.Client.CloseIdleConnections calls it.
// The Carriers close in the background: a program about to exit calls
// CloseIdleConnectionsContext, which waits for them.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, rc := range t.conns {
		select {
		case <-rc.ready:
			if rc.err == nil {
				t.drainLocked(rc)
			}
		default:
		}
	}
}
