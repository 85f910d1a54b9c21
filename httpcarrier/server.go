package httpcarrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/ctxend"
)

// Server serves an http.Handler to clients of Transport: each fork of a
// root Carrier carries one request and its response. A request's context
// holds an *http.Server under http.ServerContextKey, as under net/http: it
// is never started and carries only the Handler and the limits.
type Server struct {
	Handler http.Handler
	// MaxHeaderBytes bounds a request head or trailer block; zero means
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading the root's preface and each
	// request head; zero means 30 s.
	ReadHeaderTimeout time.Duration
	// MaxConcurrentRequests bounds the requests served at once on one
	// root Carrier; the server takes no more forks of it until one ends
	// (the stack's fork flow control holds the client back). Zero means
	// DefaultMaxConcurrentRequests (256). The server tells the client on
	// the root, and a Transport shares them fairly between the clients of
	// a front (Transport.MaxConcurrentRequests).
	MaxConcurrentRequests int
	// IdleTimeout bounds the wait for the next request on a fork the
	// client keeps open between requests, after which the fork is closed
	// in order; zero means 5 minutes.
	IdleTimeout time.Duration
	// BaseContext, if set, is the parent of every request's context.
	BaseContext context.Context
	Logger      *slog.Logger

	mu        sync.Mutex
	listeners map[*carrier.Listener]struct{}
	roots     map[*carrier.Carrier]struct{}
	shutdown  bool
	txs       sync.WaitGroup // transactions
	conns     sync.WaitGroup // root serving goroutines
	ctx       context.Context
	cancel    context.CancelFunc
	std       *http.Server // under http.ServerContextKey
}

// Serve serves h on every Carrier l accepts; see Server.Serve.
func Serve(l *carrier.Listener, h http.Handler) error {
	return (&Server{Handler: h}).Serve(l)
}

func (s *Server) init() {
	if s.ctx == nil {
		base := s.BaseContext
		if base == nil {
			base = context.Background()
		}
		s.ctx, s.cancel = context.WithCancel(base)
		s.std = &http.Server{Handler: s.Handler, MaxHeaderBytes: s.maxHeader(), ReadHeaderTimeout: s.headerTimeout(), IdleTimeout: s.idleTimeout()}
		s.listeners = map[*carrier.Listener]struct{}{}
		s.roots = map[*carrier.Carrier]struct{}{}
	}
}

func (s *Server) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Server) headerTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return 30 * time.Second
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return 5 * time.Minute
}

func (s *Server) maxHeader() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

// Serve accepts root Carriers from l and serves their forks until
// Shutdown or Close, then returns http.ErrServerClosed. l is closed when
// Serve returns.
func (s *Server) Serve(l *carrier.Listener) error {
	s.mu.Lock()
	s.init()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	ctx := s.ctx
	s.mu.Unlock()
	defer l.Close()
	for {
		root, err := l.Accept(ctx)
		if err != nil {
			s.mu.Lock()
			down := s.shutdown
			delete(s.listeners, l)
			s.mu.Unlock()
			if down {
				return http.ErrServerClosed
			}
			return err
		}
		s.ServeCarrier(root)
	}
}

// ServeCarrier serves one root Carrier, for example one accepted from a
// Listener of your own, in the background.
func (s *Server) ServeCarrier(root *carrier.Carrier) {
	s.mu.Lock()
	s.init()
	if s.shutdown {
		s.mu.Unlock()
		root.Abort()
		return
	}
	s.roots[root] = struct{}{}
	s.conns.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.conns.Done()
		s.serveRoot(root)
		s.mu.Lock()
		delete(s.roots, root)
		s.mu.Unlock()
	}()
}

func (s *Server) serveRoot(root *carrier.Carrier) {
	log := s.log().With("peer", root.Path().Remote.String(), "stack", root.Stack())
	ctx, cancel := context.WithTimeout(s.ctx, s.headerTimeout())
	m, err := readSmall(ctx, root, len(preface))
	cancel()
	if err != nil || string(m) != string(preface) {
		log.Debug("not an HTTP client", "err", err)
		root.Abort()
		return
	}
	n := s.MaxConcurrentRequests
	if n <= 0 {
		n = DefaultMaxConcurrentRequests
	}
	// The client shares the slots between its own clients by this.
	ctx, cancel = context.WithTimeout(s.ctx, s.headerTimeout())
	err = root.Send(ctx, slotsMsg(n))
	cancel()
	if err != nil {
		log.Debug("cannot announce the slots", "err", err)
		root.Abort()
		return
	}
	ctx, cancel = context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		// Nothing more comes on the root; its end ends the forks' accept.
		for {
			if _, err := readSmall(ctx, root, 64); err != nil {
				cancel()
				return
			}
		}
	}()
	slots := make(chan struct{}, n)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		f, err := root.AcceptFork(ctx)
		if err != nil {
			break
		}
		s.txs.Add(1)
		go func() {
			defer s.txs.Done()
			defer func() { <-slots }()
			s.serveFork(f, log)
		}()
	}
	if s.ctx.Err() != nil {
		root.Abort()
	} else {
		root.Close()
	}
}

// Shutdown stops accepting root Carriers, tells every client to go away
// (a goaway message on each root) and waits until the clients have closed
// their roots and every request has its response, or ctx ends; then it
// aborts what is left. It returns ctx's error in that case.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.init()
	s.shutdown = true
	ls := make([]*carrier.Listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	roots := make([]*carrier.Carrier, 0, len(s.roots))
	for r := range s.roots {
		roots = append(roots, r)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, r := range roots {
		r.Send(ctx, goAway)
	}
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		s.txs.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close aborts every root Carrier and transaction at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.init()
	s.shutdown = true
	ls := make([]*carrier.Listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	s.cancel()
	for _, l := range ls {
		l.Close()
	}
	s.conns.Wait()
	s.txs.Wait()
	return nil
}

// serveFork serves the transactions on f one after another, until the
// client closes f or a transaction does not end cleanly.
func (s *Server) serveFork(f *carrier.Carrier, log *slog.Logger) {
	for first := true; ; first = false {
		reuse, err := s.serveOne(f, first, log)
		if err == errHijacked {
			return // the handler owns the fork
		}
		if err != nil {
			log.Debug("transaction failed", "err", err)
			f.Abort()
			return
		}
		if !reuse {
			f.Close()
			return
		}
	}
}

// serveOne reads one request from f, runs the handler and sends the
// response. It reports whether f can carry the next transaction; an error
// means f must be aborted.
func (s *Server) serveOne(f *carrier.Carrier, first bool, log *slog.Logger) (reuse bool, err error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	wait := s.headerTimeout()
	if !first {
		wait = s.idleTimeout() // the client keeps idle forks for the next request
	}
	hctx, hcancel := context.WithTimeout(ctx, wait)
	hm, err := readHead(hctx, f, s.maxHeader())
	// The wait ran out even if hctx's timer has not marked it done yet: a
	// stack that maps the deadline onto its socket (TCP) fails the read
	// first.
	idle := !first && err != nil && ctx.Err() == nil && ctxend.Err(hctx) != nil
	hcancel()
	switch {
	case !first && errors.Is(err, io.EOF):
		return false, nil // the client closed the idle fork
	case idle:
		// Closed in order: the last response may not have been read yet
		// (a reset would drop it unread and fail its request).
		return false, nil
	case errors.Is(err, errHeadTooLarge):
		s.refuse(f, http.StatusRequestHeaderFieldsTooLarge)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("no request head: %w", err)
	}
	req, err := parseRequestHead(hm.head)
	if err != nil {
		log.Debug("bad request head", "err", err)
		s.refuse(f, http.StatusBadRequest)
		return false, nil
	}
	req.RemoteAddr = f.Path().Remote.String()
	// Handlers look for a server there: httputil.ReverseProxy aborts a
	// response whose origin broke off mid-body only under one, and
	// otherwise ends it as if complete.
	ctx = context.WithValue(ctx, http.ServerContextKey, s.std)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, carrier.Addr{Stack: f.Stack(), AddrPort: f.Path().Local})
	req = req.WithContext(ctx)
	w := &responseWriter{f: f, req: req, ctx: ctx, header: http.Header{}, log: log}
	// The watch turns the client's abort of the fork into the request's
	// cancellation, once the request has been read: nothing else may
	// arrive before the response has ended.
	var watching sync.WaitGroup
	var violated atomic.Bool
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch := func() {
		watching.Go(func() {
			_, err := f.Ready(wctx, carrier.ReadyOptions{Max: 1})
			if wctx.Err() == nil {
				violated.Store(true)
				log.Debug("fork aborted or misused during the transaction", "err", err)
				cancel()
			}
		})
	}
	var b *body
	if tunnelRequest(req) {
		// The rest of the request message is the client's stream, for a
		// handler that switches (Hijack); the handler sees no body, and
		// the fork ends with the transaction unless hijacked.
		req.ContentLength = 0
		w.tunnel, w.srvCtx = &hm, s.ctx
	} else if hm.end && len(hm.rest) == 0 && req.Trailer == nil {
		if req.ContentLength > 0 {
			s.refuse(f, http.StatusBadRequest)
			return false, nil
		}
		req.ContentLength = 0
		watch()
	} else {
		b = &body{c: f, ctx: ctx, pre: hm.rest, end: hm.end, want: req.ContentLength, more: req.Trailer != nil}
		b.atEnd = func() error {
			if req.Trailer != nil {
				m, err := readSmall(ctx, f, s.maxHeader())
				if err != nil {
					return fmt.Errorf("httpcarrier: reading trailers: %w", err)
				}
				tr, err := parseTrailers(m)
				if err != nil {
					return err
				}
				for k, v := range tr {
					req.Trailer[k] = v
				}
			}
			watch()
			return nil
		}
		if req.Header.Get("Expect") == "100-continue" {
			b.onRead = func() { w.WriteHeader(http.StatusContinue) }
		}
		req.Body = b
	}
	ok := s.run(w, req, log)
	wcancel()
	watching.Wait()
	switch {
	case !ok:
		return false, errors.New("handler panicked")
	case violated.Load():
		return false, errors.New("client aborted")
	case w.isHijacked():
		return false, errHijacked
	}
	if err := w.finish(); err != nil {
		return false, fmt.Errorf("response not sent: %w", err)
	}
	// The next request may follow only once this one was read to its end.
	// A client whose request was sent whole keeps the fork for its next
	// request, so read and drop what the handler left, for a while.
	if w.tunnel != nil {
		return false, nil
	}
	if b == nil || b.readToEnd() {
		return true, nil
	}
	stop := time.AfterFunc(drainTimeout, cancel)
	ok = b.drain(maxDrain)
	stop.Stop()
	return ok, nil
}

// A request body the handler left unread is drained, at most this much
// and this long, so that its fork can carry the next request.
const (
	maxDrain     = 16 << 20
	drainTimeout = 2 * time.Second
)

// run calls the handler, recovering a panic as net/http does.
func (s *Server) run(w *responseWriter, req *http.Request, log *slog.Logger) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if v != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				log.Error("http handler panic", "panic", v, "stack", string(buf))
			}
		}
	}()
	h := s.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	h.ServeHTTP(w, req)
	return true
}

// refuse answers a request that could not be read and ends the fork.
func (s *Server) refuse(f *carrier.Carrier, code int) {
	h := http.Header{"Content-Length": {"0"}}
	ctx, cancel := context.WithTimeout(s.ctx, s.headerTimeout())
	defer cancel()
	if err := f.Send(ctx, responseHead(code, h)); err != nil {
		f.Abort()
		return
	}
	f.Close()
}
