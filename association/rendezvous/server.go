package rendezvous

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Server defaults.
const (
	DefaultMaxEntries = 4096
	DefaultEntryTTL   = 60 * time.Second
	DefaultMaxWait    = 25 * time.Second
	// MaxRequestSize bounds a request body.
	MaxRequestSize = 64 << 10
)

// Server is the rendezvous point, an http.Handler serving POST /exchange.
// The zero value is ready to use. A Server holds no goroutines of its own;
// Close releases the requests waiting in it.
type Server struct {
	// MaxEntries bounds the registrations held; zero means
	// DefaultMaxEntries. Beyond it, new registrations get 503.
	MaxEntries int
	// EntryTTL is how long a registration lives after its last poll; zero
	// means DefaultEntryTTL.
	EntryTTL time.Duration
	// MaxWait bounds one long poll; the client polls again after it. Zero
	// means DefaultMaxWait.
	MaxWait time.Duration
	// Authorize, if set, may reject a request to register as self; its
	// error text is returned with status 403.
	Authorize func(r *http.Request, self string) error
	Logger    *slog.Logger

	now func() time.Time // for tests; nil means time.Now

	mu      sync.Mutex
	entries map[key]*entry
	closed  bool
	done    chan struct{}
}

type key struct{ self, peer string }

// entry is the registration of self wanting peer.
type entry struct {
	offer   Offer
	answer  *Offer        // the peer's offer, once matched
	ready   chan struct{} // closed when answer is set
	waiter  chan struct{} // closed to displace the current long poll
	expires time.Time
}

func (s *Server) init() {
	if s.entries == nil {
		s.entries = make(map[key]*entry)
		s.done = make(chan struct{})
	}
}

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *Server) ttl() time.Duration {
	if s.EntryTTL > 0 {
		return s.EntryTTL
	}
	return DefaultEntryTTL
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Len returns the number of registrations held.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.sweep()
	return len(s.entries)
}

// Close ends every pending long poll with 503 and refuses new requests.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if !s.closed {
		s.closed = true
		close(s.done)
		clear(s.entries)
	}
	return nil
}

// sweep drops expired registrations that no request is waiting on.
func (s *Server) sweep() {
	now := s.clock()
	for k, e := range s.entries {
		if e.waiter == nil && now.After(e.expires) {
			delete(s.entries, k)
		}
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/exchange" {
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusRequestEntityTooLarge, "request too large")
			return
		}
		httpError(w, http.StatusBadRequest, "reading request: "+err.Error())
		return
	}
	req, err := decodeRequest(body)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.Authorize != nil {
		if err := s.Authorize(r, req.Self); err != nil {
			httpError(w, http.StatusForbidden, err.Error())
			return
		}
	}
	status, answer := s.exchange(r.Context(), req)
	switch status {
	case http.StatusOK:
		writeJSON(w, status, response{Offer: *answer})
	case http.StatusNoContent:
		w.WriteHeader(status)
	case http.StatusConflict:
		httpError(w, status, "displaced by a newer poll for the same names")
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
		httpError(w, status, "server busy or closing")
	}
}

// decodeRequest parses and validates a request body.
func decodeRequest(body []byte) (*request, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var req request
	if err := dec.Decode(&req); err != nil {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: bad JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: trailing data after JSON")
	}
	if !ValidID(req.Self) || !ValidID(req.Peer) {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: bad peer name")
	}
	if req.Self == req.Peer {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: self and peer are the same")
	}
	if err := req.Offer.Validate(); err != nil {
		return nil, err
	}
	req.Offer.Controlling = false
	return &req, nil
}

// exchange registers req and waits for the peer's matching registration.
// It returns 200 with the peer's offer, 204 when the poll timed out,
// 409 when displaced by a newer poll, or 503.
func (s *Server) exchange(ctx context.Context, req *request) (int, *Offer) {
	mine, theirs := key{req.Self, req.Peer}, key{req.Peer, req.Self}
	offer := req.Offer
	offer.Controlling = Controlling(req.Self, req.Peer)

	s.mu.Lock()
	s.init()
	if s.closed {
		s.mu.Unlock()
		return http.StatusServiceUnavailable, nil
	}
	s.sweep()
	now := s.clock()

	// The peer is already waiting for us: match at once. If the peer has
	// not yet collected an earlier answer from us, it gets this one.
	if pe := s.entries[theirs]; pe != nil {
		if pe.answer == nil {
			close(pe.ready)
		}
		pe.answer = &offer
		pe.expires = now.Add(s.ttl())
		delete(s.entries, mine)
		answer := pe.offer
		s.mu.Unlock()
		s.log().Debug("rendezvous: matched", "self", req.Self, "peer", req.Peer)
		return http.StatusOK, &answer
	}

	e := s.entries[mine]
	switch {
	case e == nil:
		max := s.MaxEntries
		if max <= 0 {
			max = DefaultMaxEntries
		}
		if len(s.entries) >= max {
			s.mu.Unlock()
			return http.StatusServiceUnavailable, nil
		}
		e = &entry{offer: offer, ready: make(chan struct{})}
		s.entries[mine] = e
	case e.offer.Ufrag != req.Offer.Ufrag:
		// A new ICE session from the same peer replaces the old one.
		e.offer, e.answer, e.ready = offer, nil, make(chan struct{})
	}
	if e.answer != nil {
		// Matched while we were between polls.
		answer := *e.answer
		delete(s.entries, mine)
		s.mu.Unlock()
		return http.StatusOK, &answer
	}
	if e.waiter != nil {
		close(e.waiter)
	}
	waiter, ready := make(chan struct{}), e.ready
	e.waiter = waiter
	s.mu.Unlock()

	wait := s.MaxWait
	if wait <= 0 {
		wait = DefaultMaxWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	status := http.StatusNoContent
	select {
	case <-ready:
		status = http.StatusOK
	case <-waiter:
		return http.StatusConflict, nil
	case <-s.done:
		return http.StatusServiceUnavailable, nil
	case <-t.C:
	case <-ctx.Done():
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[mine] != e || e.waiter != waiter {
		if status == http.StatusOK && e.answer != nil {
			return status, e.answer
		}
		return http.StatusConflict, nil
	}
	e.waiter = nil
	if status == http.StatusOK {
		delete(s.entries, mine)
		s.log().Debug("rendezvous: matched", "self", req.Self, "peer", req.Peer)
		return status, e.answer
	}
	e.expires = s.clock().Add(s.ttl())
	return status, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: fmt.Sprintf("%d %s: %s", status, http.StatusText(status), msg)})
}
