package rendezvous

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Server defaults.
const (
	DefaultMaxEntries   = 4096
	DefaultMaxPerSource = 64
	DefaultMaxPerKey    = 16
	DefaultRequestRate  = 100
	DefaultRequestBurst = 200
	DefaultMaxSources   = 1 << 16
	DefaultMaxNonces    = 1 << 16
	DefaultEntryTTL     = 10 * time.Second
	DefaultMaxWait      = 25 * time.Second
	DefaultNonceTTL     = 15 * time.Second
	// MaxRequestSize bounds a request body.
	MaxRequestSize = 64 << 10
)

// Config sets a Server's limits. The zero value of each field means its
// default.
//
// A source is a client's IPv4 address or IPv6 /64: by default as the
// server's connection sees it, so behind a reverse proxy set ClientAddr.
type Config struct {
	// MaxEntries bounds the registrations held. When it is reached, a
	// new registration displaces the oldest one of the source holding the
	// most (if that source holds more than the newcomer's), so a client
	// that holds little is never locked out; otherwise it gets 503.
	MaxEntries int
	// MaxPerSource bounds the registrations held for one source, and
	// MaxPerKey those held for one peer ID; beyond them, new
	// registrations from that client get 429.
	MaxPerSource, MaxPerKey int
	// RequestRate and RequestBurst shape each source's requests (a token
	// bucket); beyond them, requests get 429.
	RequestRate  float64
	RequestBurst int
	// MaxSources bounds the sources tracked at once: past it, one that
	// holds no registration is forgotten for each new one (only its
	// request rate is lost). MaxNonces bounds the used nonces remembered;
	// past it, the server forgets the oldest and refuses the nonces minted
	// before those it remembers, so clients sign again over a fresh one.
	MaxSources, MaxNonces int
	// EntryTTL is how long a registration outlives a poll that ended
	// without an answer, for the client to poll again. A registration
	// whose client goes away while polling is dropped at once.
	EntryTTL time.Duration
	// MaxWait bounds one long poll; the client polls again after it.
	MaxWait time.Duration
	// NonceTTL is how long a server nonce may be used.
	NonceTTL time.Duration
	// Authorize, if set, may reject an authenticated request to register
	// as self; its error text is returned with status 403.
	Authorize func(r *http.Request, self PeerID) error
	// ClientAddr, if set, returns a request's client address, such as
	// the one a trusted reverse proxy reports; an invalid address means
	// the connection's.
	ClientAddr func(r *http.Request) netip.Addr
	Logger     *slog.Logger
	// InsecureSkipAuth accepts requests under any name without checking
	// keys, as a compromised server would; for tests of the peers' own
	// checks only.
	InsecureSkipAuth bool
}

func orDefault[T int | float64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (c Config) withDefaults() Config {
	c.MaxEntries = orDefault(c.MaxEntries, DefaultMaxEntries)
	c.MaxPerSource = orDefault(c.MaxPerSource, DefaultMaxPerSource)
	c.MaxPerKey = orDefault(c.MaxPerKey, DefaultMaxPerKey)
	c.RequestRate = orDefault(c.RequestRate, DefaultRequestRate)
	c.RequestBurst = orDefault(c.RequestBurst, DefaultRequestBurst)
	c.MaxSources = orDefault(c.MaxSources, DefaultMaxSources)
	c.MaxNonces = orDefault(c.MaxNonces, DefaultMaxNonces)
	c.EntryTTL = orDefault(c.EntryTTL, DefaultEntryTTL)
	c.MaxWait = orDefault(c.MaxWait, DefaultMaxWait)
	c.NonceTTL = orDefault(c.NonceTTL, DefaultNonceTTL)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server is the rendezvous point, an http.Handler serving POST /exchange.
// It holds no goroutines of its own; Close releases the requests waiting
// in it. The zero value uses the default Config.
type Server struct {
	cfg  Config
	once sync.Once
	now  func() time.Time // for tests; nil means time.Now

	mu      sync.Mutex
	entries map[key]*entry
	sources map[netip.Prefix]*source
	perKey  map[PeerID]int
	nonces  nonces
	swept   time.Time
	closed  bool
	done    chan struct{}
}

// NewServer returns a Server with the given limits.
func NewServer(cfg Config) *Server { return &Server{cfg: cfg} }

type key struct{ self, peer PeerID }

// entry is the registration of self wanting peer.
type entry struct {
	offer   Offer
	answer  *Offer        // the peer's offer, once matched
	ready   chan struct{} // closed when answer is set
	waiter  chan struct{} // closed to displace the current long poll
	expires time.Time
	created time.Time
	src     netip.Prefix
	evicted bool // displaced to make room for another client
}

// source is what the server tracks of one client address.
type source struct {
	tokens  float64
	last    time.Time
	entries int
}

func (s *Server) init() {
	s.once.Do(func() {
		s.cfg = s.cfg.withDefaults()
		s.entries = make(map[key]*entry)
		s.sources = make(map[netip.Prefix]*source)
		s.perKey = make(map[PeerID]int)
		s.done = make(chan struct{})
		s.nonces.ttl, s.nonces.max = s.cfg.NonceTTL, s.cfg.MaxNonces
		rand.Read(s.nonces.secret[:])
	})
}

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// Len returns the number of registrations held.
func (s *Server) Len() int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(s.clock(), true)
	return len(s.entries)
}

// Close ends every pending long poll with 503 and refuses new requests.
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
		clear(s.entries)
		clear(s.sources)
		clear(s.perKey)
	}
	return nil
}

// sweep drops expired registrations that no request is waiting on, and
// idle sources; unless forced, at most once a second.
func (s *Server) sweep(now time.Time, force bool) {
	if !force && now.Sub(s.swept) < time.Second {
		return
	}
	s.swept = now
	for k, e := range s.entries {
		if e.waiter == nil && now.After(e.expires) {
			s.remove(k, e)
		}
	}
	for p, src := range s.sources {
		if src.entries == 0 && s.refill(src, now) >= float64(s.cfg.RequestBurst) {
			delete(s.sources, p)
		}
	}
}

// remove drops a registration and its share of its client's limits.
func (s *Server) remove(k key, e *entry) {
	if e == nil || s.entries[k] != e {
		return
	}
	delete(s.entries, k)
	if src := s.sources[e.src]; src != nil {
		src.entries--
	}
	if s.perKey[k.self]--; s.perKey[k.self] <= 0 {
		delete(s.perKey, k.self)
	}
}

// evictFor makes room in a full table for a registration from newcomer:
// it drops the oldest registration of the source that holds the most, if
// that is more than newcomer holds. Its poll ends with 503.
func (s *Server) evictFor(newcomer *source) bool {
	var busiest netip.Prefix
	most := 0
	for p, src := range s.sources {
		if src.entries > most {
			busiest, most = p, src.entries
		}
	}
	if most <= newcomer.entries || s.sources[busiest] == newcomer {
		return false
	}
	var (
		victim  *entry
		victimK key
	)
	for k, e := range s.entries {
		if e.src == busiest && (victim == nil || e.created.Before(victim.created)) {
			victim, victimK = e, k
		}
	}
	if victim == nil {
		return false
	}
	s.remove(victimK, victim)
	if victim.waiter != nil {
		victim.evicted = true
		close(victim.waiter)
		victim.waiter = nil
	}
	s.cfg.Logger.Debug("rendezvous: table full, evicted a registration", "source", busiest, "held", most)
	return true
}

// forgetIdleSource drops one tracked source that holds no registration,
// to make room for another.
func (s *Server) forgetIdleSource() bool {
	for p, src := range s.sources {
		if src.entries == 0 {
			delete(s.sources, p)
			return true
		}
	}
	return false
}

// refill brings a source's token bucket up to now and returns its tokens.
func (s *Server) refill(src *source, now time.Time) float64 {
	if d := now.Sub(src.last); d > 0 {
		src.tokens = min(float64(s.cfg.RequestBurst), src.tokens+d.Seconds()*s.cfg.RequestRate)
		src.last = now
	}
	return src.tokens
}

// sourceOf returns the client's source prefix.
func (s *Server) sourceOf(r *http.Request) netip.Prefix {
	var a netip.Addr
	if s.cfg.ClientAddr != nil {
		a = s.cfg.ClientAddr(r)
	}
	if !a.IsValid() {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			return netip.Prefix{}
		}
		a = ap.Addr()
	}
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// admit takes a token from the request's source: 0 if admitted, else the
// status to answer.
func (s *Server) admit(src netip.Prefix, now time.Time) int {
	if s.closed {
		return http.StatusServiceUnavailable
	}
	s.sweep(now, false)
	st := s.sources[src]
	if st == nil {
		if len(s.sources) >= s.cfg.MaxSources && !s.forgetIdleSource() {
			return http.StatusServiceUnavailable
		}
		st = &source{tokens: float64(s.cfg.RequestBurst), last: now}
		s.sources[src] = st
	}
	if s.refill(st, now) < 1 {
		return http.StatusTooManyRequests
	}
	st.tokens--
	return 0
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	if r.URL.Path != "/exchange" {
		httpError(w, http.StatusNotFound, "not found")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	src := s.sourceOf(r)
	s.mu.Lock()
	now := s.clock()
	status := s.admit(src, now)
	w.Header().Set(HeaderNonce, s.nonces.mint(now, random8()))
	s.mu.Unlock()
	if status != 0 {
		w.Header().Set("Retry-After", "1")
		httpError(w, status, "server busy or too many requests from this client")
		return
	}
	nonce, pubHdr, sigHdr := r.Header.Get(HeaderNonce), r.Header.Get(HeaderKey), r.Header.Get(HeaderSignature)
	if nonce == "" || pubHdr == "" || sigHdr == "" {
		w.Header().Set("WWW-Authenticate", "Postsockets-Peer")
		httpError(w, http.StatusUnauthorized, "sign the request with the peer key over the nonce in "+HeaderNonce)
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
	self, err := s.authenticate(nonce, pubHdr, sigHdr, body)
	if s.cfg.InsecureSkipAuth {
		if req, derr := decodeRequest(body); derr == nil {
			self, err = req.Self, nil
		}
	}
	if err != nil {
		if errors.Is(err, post.ErrMalformed) {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.Header().Set("WWW-Authenticate", "Postsockets-Peer")
		httpError(w, http.StatusUnauthorized, err.Error())
		return
	}
	req, err := decodeRequest(body)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Self != self {
		httpError(w, http.StatusForbidden, "the request is not signed by the key of "+string(req.Self))
		return
	}
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(r, req.Self); err != nil {
			httpError(w, http.StatusForbidden, err.Error())
			return
		}
	}
	// The body is read: the long poll may outlast the server's read and
	// write timeouts. Unsupported writers (tests) just keep their own.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.MaxWait + 10*time.Second))
	status, answer := s.exchange(r.Context(), req, src)
	switch status {
	case http.StatusOK:
		writeJSON(w, status, response{Offer: *answer})
	case http.StatusNoContent:
		w.WriteHeader(status)
	case http.StatusConflict:
		httpError(w, status, "displaced by a newer poll for the same names")
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
		httpError(w, status, "too many registrations from this client")
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
		httpError(w, status, "server busy or closing")
	}
}

func random8() (b [8]byte) {
	rand.Read(b[:])
	return b
}

// authenticate checks a request's signature and nonce and returns the
// signer's peer ID.
func (s *Server) authenticate(nonce, pubHdr, sigHdr string, body []byte) (PeerID, error) {
	s.mu.Lock()
	_, err := s.nonces.check(nonce, s.clock())
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	pub, err := verifyRequest(nonce, pubHdr, sigHdr, body)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Check again: another request may have used the nonce meanwhile.
	b, err := s.nonces.check(nonce, s.clock())
	if err != nil {
		return "", err
	}
	s.nonces.use(b, s.clock())
	return IDFromPublicKey(pub)
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
	if _, err := ParsePeerID(string(req.Self)); err != nil {
		return nil, err
	}
	if _, err := ParsePeerID(string(req.Peer)); err != nil {
		return nil, err
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
// 409 when displaced by a newer poll, 429 past the client's limits, or
// 503.
func (s *Server) exchange(ctx context.Context, req *request, src netip.Prefix) (int, *Offer) {
	mine, theirs := key{req.Self, req.Peer}, key{req.Peer, req.Self}
	offer := req.Offer
	offer.Controlling = Controlling(req.Self, req.Peer)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return http.StatusServiceUnavailable, nil
	}
	now := s.clock()

	// The peer is already waiting for us: match at once. If the peer has
	// not yet collected an earlier answer from us, it gets this one.
	if pe := s.entries[theirs]; pe != nil {
		if pe.answer == nil {
			close(pe.ready)
		}
		pe.answer = &offer
		pe.expires = now.Add(s.cfg.EntryTTL)
		s.remove(mine, s.entries[mine])
		answer := pe.offer
		s.mu.Unlock()
		s.cfg.Logger.Debug("rendezvous: matched", "self", req.Self, "peer", req.Peer)
		return http.StatusOK, &answer
	}

	e := s.entries[mine]
	switch {
	case e == nil:
		st := s.sources[src]
		switch {
		case st == nil || st.entries >= s.cfg.MaxPerSource || s.perKey[req.Self] >= s.cfg.MaxPerKey:
			s.mu.Unlock()
			return http.StatusTooManyRequests, nil
		case len(s.entries) >= s.cfg.MaxEntries && !s.evictFor(st):
			s.mu.Unlock()
			return http.StatusServiceUnavailable, nil
		}
		e = &entry{offer: offer, ready: make(chan struct{}), src: src, created: now}
		s.entries[mine] = e
		st.entries++
		s.perKey[req.Self]++
	case e.offer.Ufrag != req.Offer.Ufrag:
		// A new ICE session from the same peer replaces the old one.
		e.offer, e.answer, e.ready = offer, nil, make(chan struct{})
	}
	if e.answer != nil {
		// Matched while we were between polls.
		answer := *e.answer
		s.remove(mine, e)
		s.mu.Unlock()
		return http.StatusOK, &answer
	}
	if e.waiter != nil {
		close(e.waiter)
	}
	waiter, ready := make(chan struct{}), e.ready
	e.waiter = waiter
	s.mu.Unlock()

	t := time.NewTimer(s.cfg.MaxWait)
	defer t.Stop()
	status := http.StatusNoContent
	gone := false
	select {
	case <-ready:
		status = http.StatusOK
	case <-waiter:
		s.mu.Lock()
		evicted := e.evicted
		s.mu.Unlock()
		if evicted {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusConflict, nil
	case <-s.done:
		return http.StatusServiceUnavailable, nil
	case <-t.C:
	case <-ctx.Done():
		gone = true
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
	switch {
	case status == http.StatusOK:
		s.remove(mine, e)
		s.cfg.Logger.Debug("rendezvous: matched", "self", req.Self, "peer", req.Peer)
		return status, e.answer
	case gone:
		// The client went away: free its registration at once.
		s.remove(mine, e)
		return http.StatusServiceUnavailable, nil
	}
	e.expires = s.clock().Add(s.cfg.EntryTTL)
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
