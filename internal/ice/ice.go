// Package ice establishes a peer-to-peer UDP path with Interactive
// Connectivity Establishment (RFC 8445). It is a small wrapper over
// github.com/pion/ice/v2 and the only package in the module that imports
// pion, so a move to a newer pion major touches nothing else.
//
// An Agent gathers local candidates (host, server-reflexive through STUN,
// relayed through TURN), takes the peer's credentials and candidates from
// some signalling channel, runs connectivity checks and returns the
// selected candidate pair as a net.PacketConn.
package ice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	pice "github.com/pion/ice/v2"
	"github.com/pion/stun"

	"github.com/postsockets/postsockets/post"
)

// CandidateType is the kind of an ICE candidate.
type CandidateType string

// Candidate types.
const (
	Host            CandidateType = "host"
	ServerReflexive CandidateType = "srflx"
	PeerReflexive   CandidateType = "prflx"
	Relay           CandidateType = "relay"
)

// Network names accepted in Config.NetworkTypes.
const (
	UDP4 = "udp4"
	UDP6 = "udp6"
)

// TURNServer is a relay server and its long-term credentials.
type TURNServer struct {
	// URL is "turn:host:port" (optionally "?transport=udp|tcp") or
	// "turns:host:port".
	URL      string
	Username string
	Password string
}

// Config configures an Agent. The zero value gathers host candidates on
// UDP over IPv4 and IPv6, excluding loopback.
type Config struct {
	// STUN lists "stun:host:port" servers for server-reflexive candidates.
	STUN []string
	// TURN lists relay servers for relayed candidates.
	TURN []TURNServer
	// NetworkTypes restricts gathering to UDP4 and/or UDP6; empty means
	// both.
	NetworkTypes []string
	// CandidateTypes restricts the candidate types gathered; empty means
	// host, plus srflx when STUN or TURN is set and relay when TURN is set.
	CandidateTypes []CandidateType
	// IncludeLoopback gathers loopback host candidates, for tests. Only
	// 127.0.0.0/8: pion never gathers ::1.
	IncludeLoopback bool
	// PortMin and PortMax bound the local UDP ports; zero means any.
	PortMin, PortMax uint16
	// KeepAliveInterval is how often the selected pair is refreshed to hold
	// NAT bindings open; zero means 2 s.
	KeepAliveInterval time.Duration
	// CheckInterval is the pace of connectivity checks; zero means 200 ms.
	CheckInterval time.Duration
	// DisconnectedTimeout is the silence after which the path is reported
	// disconnected; zero means 5 s.
	DisconnectedTimeout time.Duration
	// FailedTimeout is the further silence after which the path fails and
	// Connect or ReadFrom give up; zero means 25 s.
	FailedTimeout time.Duration
	// InterfaceFilter and IPFilter, if set, return false to skip an
	// interface or local address when gathering.
	InterfaceFilter func(name string) bool
	IPFilter        func(addr netip.Addr) bool
	Logger          *slog.Logger
}

func orDefault(d, def time.Duration) *time.Duration {
	if d <= 0 {
		d = def
	}
	return &d
}

func (c *Config) agentConfig() (*pice.AgentConfig, error) {
	ac := &pice.AgentConfig{
		PortMin:             c.PortMin,
		PortMax:             c.PortMax,
		IncludeLoopback:     c.IncludeLoopback,
		MulticastDNSMode:    pice.MulticastDNSModeDisabled,
		KeepaliveInterval:   orDefault(c.KeepAliveInterval, 2*time.Second),
		CheckInterval:       orDefault(c.CheckInterval, 200*time.Millisecond),
		DisconnectedTimeout: orDefault(c.DisconnectedTimeout, 5*time.Second),
		FailedTimeout:       orDefault(c.FailedTimeout, 25*time.Second),
		InterfaceFilter:     c.InterfaceFilter,
		LoggerFactory:       loggerFactory{c.log()},
	}
	if c.IPFilter != nil {
		f := c.IPFilter
		ac.IPFilter = func(ip net.IP) bool {
			a, ok := netip.AddrFromSlice(ip)
			return ok && f(a.Unmap())
		}
	}
	nets := c.NetworkTypes
	if len(nets) == 0 {
		nets = []string{UDP4, UDP6}
	}
	for _, n := range nets {
		switch strings.ToLower(n) {
		case UDP4:
			ac.NetworkTypes = append(ac.NetworkTypes, pice.NetworkTypeUDP4)
		case UDP6:
			ac.NetworkTypes = append(ac.NetworkTypes, pice.NetworkTypeUDP6)
		default:
			return nil, post.Errorf(post.ErrNotSupported, "ice: network type %q", n)
		}
	}
	for _, s := range c.STUN {
		u, err := stun.ParseURI(s)
		if err != nil {
			return nil, fmt.Errorf("ice: STUN server %q: %w", s, err)
		}
		if u.Scheme != stun.SchemeTypeSTUN && u.Scheme != stun.SchemeTypeSTUNS {
			return nil, fmt.Errorf("ice: STUN server %q: not a stun: URL", s)
		}
		ac.Urls = append(ac.Urls, u)
	}
	for _, t := range c.TURN {
		u, err := stun.ParseURI(t.URL)
		if err != nil {
			return nil, fmt.Errorf("ice: TURN server %q: %w", t.URL, err)
		}
		if u.Scheme != stun.SchemeTypeTURN && u.Scheme != stun.SchemeTypeTURNS {
			return nil, fmt.Errorf("ice: TURN server %q: not a turn: URL", t.URL)
		}
		u.Username, u.Password = t.Username, t.Password
		ac.Urls = append(ac.Urls, u)
	}
	types := c.CandidateTypes
	if len(types) == 0 {
		types = []CandidateType{Host}
		if len(c.STUN) > 0 || len(c.TURN) > 0 {
			types = append(types, ServerReflexive)
		}
		if len(c.TURN) > 0 {
			types = append(types, Relay)
		}
	}
	for _, t := range types {
		switch t {
		case Host:
			ac.CandidateTypes = append(ac.CandidateTypes, pice.CandidateTypeHost)
		case ServerReflexive:
			ac.CandidateTypes = append(ac.CandidateTypes, pice.CandidateTypeServerReflexive)
		case Relay:
			ac.CandidateTypes = append(ac.CandidateTypes, pice.CandidateTypeRelay)
		default:
			return nil, post.Errorf(post.ErrNotSupported, "ice: candidate type %q cannot be gathered", t)
		}
	}
	if !slices.Contains(types, ServerReflexive) && !slices.Contains(types, Relay) {
		ac.Urls = nil // pion refuses servers it would not use
	}
	return ac, nil
}

func (c *Config) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// CandidateInfo describes one end of the selected candidate pair.
type CandidateInfo struct {
	Type CandidateType
	// Network is "udp4" or "udp6".
	Network string
	Addr    netip.AddrPort
	// Related is the base of a reflexive or relayed candidate, if known.
	Related netip.AddrPort
}

func (c CandidateInfo) String() string { return string(c.Type) + " " + c.Addr.String() }

func candidateInfo(c pice.Candidate) CandidateInfo {
	ci := CandidateInfo{Type: CandidateType(c.Type().String()), Network: c.NetworkType().String()}
	if a, err := netip.ParseAddr(c.Address()); err == nil {
		ci.Addr = netip.AddrPortFrom(a.Unmap(), uint16(c.Port()))
	}
	if r := c.RelatedAddress(); r != nil {
		if a, err := netip.ParseAddr(r.Address); err == nil {
			ci.Related = netip.AddrPortFrom(a.Unmap(), uint16(r.Port))
		}
	}
	return ci
}

// Limits on input taken from the peer.
const (
	MaxCandidates      = 64
	MaxCandidateLength = 512
	maxCredLength      = 256
)

// ParseCandidate checks one candidate attribute value ("candidate:..." or
// without the prefix) as received from a peer and describes it.
func ParseCandidate(s string) (CandidateInfo, error) {
	if len(s) > MaxCandidateLength {
		return CandidateInfo{}, post.Errorf(post.ErrMalformed, "ice: candidate longer than %d bytes", MaxCandidateLength)
	}
	c, err := pice.UnmarshalCandidate(s)
	if err != nil {
		return CandidateInfo{}, post.Errorf(post.ErrMalformed, "ice: candidate %q: %v", s, err)
	}
	if c.NetworkType().IsTCP() {
		return CandidateInfo{}, post.Errorf(post.ErrNotSupported, "ice: TCP candidate %q", s)
	}
	return candidateInfo(c), nil
}

// ValidCredentials reports whether ufrag and pwd are acceptable ICE
// credentials (RFC 8445 section 5.3: ice-chars, at least 4 and 22 long).
func ValidCredentials(ufrag, pwd string) bool {
	return validICEChars(ufrag, 4) && validICEChars(pwd, 22)
}

func validICEChars(s string, min int) bool {
	if len(s) < min || len(s) > maxCredLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// Agent is one ICE session with one peer. It is safe for concurrent use.
type Agent struct {
	a   *pice.Agent
	log *slog.Logger

	gatherOnce sync.Once
	gatherErr  error
	gathered   chan struct{} // closed when gathering completes

	failed     chan struct{} // closed when the connection state is failed
	failOnce   sync.Once
	closed     chan struct{}
	closeOnce  sync.Once
	connecting chan struct{} // holds one token: Connect runs once

	mu          sync.Mutex
	candidates  []string
	remoteUfrag string
	remotePwd   string
	remote      []CandidateInfo // the peer's signalled candidates
	conn        *PacketConn
}

// NewAgent returns an Agent configured by cfg. It opens no sockets until
// Gather.
func NewAgent(cfg Config) (*Agent, error) {
	ac, err := cfg.agentConfig()
	if err != nil {
		return nil, err
	}
	pa, err := pice.NewAgent(ac)
	if err != nil {
		return nil, fmt.Errorf("ice: new agent: %w", err)
	}
	a := &Agent{
		a:          pa,
		log:        cfg.log(),
		gathered:   make(chan struct{}),
		failed:     make(chan struct{}),
		closed:     make(chan struct{}),
		connecting: make(chan struct{}, 1),
	}
	a.connecting <- struct{}{}
	err = pa.OnCandidate(func(c pice.Candidate) {
		if c == nil {
			close(a.gathered)
			return
		}
		a.mu.Lock()
		a.candidates = append(a.candidates, c.Marshal())
		a.mu.Unlock()
	})
	if err == nil {
		err = pa.OnConnectionStateChange(func(s pice.ConnectionState) {
			a.log.Debug("ice: connection state", "state", s.String())
			if s == pice.ConnectionStateFailed {
				a.failOnce.Do(func() { close(a.failed) })
			}
		})
	}
	if err == nil {
		err = pa.OnSelectedCandidatePairChange(func(l, r pice.Candidate) {
			a.log.Debug("ice: selected pair", "local", candidateInfo(l).String(), "remote", candidateInfo(r).String())
		})
	}
	if err != nil {
		_ = pa.Close()
		return nil, fmt.Errorf("ice: new agent: %w", err)
	}
	return a, nil
}

// LocalCredentials returns the username fragment and password the peer
// needs to run checks against this agent.
func (a *Agent) LocalCredentials() (ufrag, pwd string, err error) {
	ufrag, pwd, err = a.a.GetLocalUserCredentials()
	if err != nil {
		return "", "", mapErr("credentials", err)
	}
	return ufrag, pwd, nil
}

// Gather collects the local candidates and returns them as SDP attribute
// values ("candidate:..."), waiting until gathering has completed. Later
// calls return the same list.
func (a *Agent) Gather(ctx context.Context) ([]string, error) {
	a.gatherOnce.Do(func() { a.gatherErr = a.a.GatherCandidates() })
	if a.gatherErr != nil {
		return nil, mapErr("gather", a.gatherErr)
	}
	select {
	case <-a.gathered:
	case <-a.closed:
		return nil, post.Errorf(post.ErrClosed, "ice: gather: agent closed")
	case <-ctx.Done():
		return nil, ctxErr("gather", ctx)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.candidates) == 0 {
		return nil, post.Errorf(post.ErrNoCandidates, "ice: gathered no candidates")
	}
	return append([]string(nil), a.candidates...), nil
}

// AddRemote sets the peer's credentials and candidates. Candidates that
// cannot be used (TCP, unknown types) are skipped; malformed input is an
// error wrapping post.ErrMalformed, and nothing is added.
func (a *Agent) AddRemote(ufrag, pwd string, candidates []string) error {
	if !ValidCredentials(ufrag, pwd) {
		return post.Errorf(post.ErrMalformed, "ice: bad remote credentials")
	}
	if len(candidates) > MaxCandidates {
		return post.Errorf(post.ErrMalformed, "ice: %d remote candidates, limit %d", len(candidates), MaxCandidates)
	}
	var (
		cs    []pice.Candidate
		infos []CandidateInfo
	)
	for _, s := range candidates {
		if _, err := ParseCandidate(s); err != nil {
			if errors.Is(err, post.ErrNotSupported) {
				continue
			}
			return err
		}
		c, err := pice.UnmarshalCandidate(s)
		if err != nil {
			return post.Errorf(post.ErrMalformed, "ice: candidate %q: %v", s, err)
		}
		cs = append(cs, c)
		infos = append(infos, candidateInfo(c))
	}
	if len(cs) == 0 {
		return post.Errorf(post.ErrNoCandidates, "ice: peer sent no usable candidates")
	}
	a.mu.Lock()
	a.remoteUfrag, a.remotePwd = ufrag, pwd
	a.remote = append(a.remote, infos...)
	a.mu.Unlock()
	for _, c := range cs {
		if err := a.a.AddRemoteCandidate(c); err != nil {
			return mapErr("add remote candidate", err)
		}
	}
	return nil
}

// Connect runs connectivity checks against the peer given to AddRemote and
// returns the selected pair as a PacketConn. Exactly one side must be
// controlling. Connect may be called once; it fails with an error wrapping
// post.ErrTimeout when the checks fail or ctx expires.
func (a *Agent) Connect(ctx context.Context, controlling bool) (*PacketConn, error) {
	a.mu.Lock()
	ufrag, pwd := a.remoteUfrag, a.remotePwd
	a.mu.Unlock()
	if ufrag == "" {
		return nil, post.Errorf(post.ErrNoCandidates, "ice: connect before AddRemote")
	}
	select {
	case <-a.connecting:
	default:
		return nil, post.Errorf(post.ErrNotSupported, "ice: Connect called twice")
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.failed:
			cancel()
		case <-cctx.Done():
		}
	}()
	var (
		c   *pice.Conn
		err error
	)
	if controlling {
		c, err = a.a.Dial(cctx, ufrag, pwd)
	} else {
		c, err = a.a.Accept(cctx, ufrag, pwd)
	}
	if err != nil {
		select {
		case <-a.failed:
			return nil, post.Errorf(post.ErrTimeout, "ice: connectivity checks failed")
		default:
		}
		if ctx.Err() != nil {
			return nil, ctxErr("connect", ctx)
		}
		return nil, mapErr("connect", err)
	}
	pc := newPacketConn(a, c)
	a.mu.Lock()
	a.conn = pc
	a.mu.Unlock()
	return pc, nil
}

// Selected returns the selected candidate pair; ok is false before Connect
// has succeeded or after the path failed. A remote candidate first
// learnt from the peer's check (peer-reflexive, when the check overtook
// the signalling) is reported as the signalled candidate with the same
// address, if one came since.
func (a *Agent) Selected() (local, remote CandidateInfo, ok bool) {
	p, err := a.a.GetSelectedCandidatePair()
	if err != nil || p == nil {
		return CandidateInfo{}, CandidateInfo{}, false
	}
	remote = candidateInfo(p.Remote)
	if remote.Type == PeerReflexive {
		a.mu.Lock()
		for _, c := range a.remote {
			if c.Addr == remote.Addr && c.Network == remote.Network {
				remote = c
				break
			}
		}
		a.mu.Unlock()
	}
	return candidateInfo(p.Local), remote, true
}

// Close stops the agent, its PacketConn and every goroutine they started.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		close(a.closed)
		a.mu.Lock()
		pc := a.conn
		a.mu.Unlock()
		if pc != nil {
			close(pc.closed)
		}
		_ = a.a.GracefulClose()
		if pc != nil {
			<-pc.readDone
		}
	})
	return nil
}

func ctxErr(op string, ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("ice: %s: %w: %w", op, post.ErrTimeout, ctx.Err())
	}
	return fmt.Errorf("ice: %s: %w", op, ctx.Err())
}

func mapErr(op string, err error) error {
	switch {
	case errors.Is(err, pice.ErrClosed):
		return fmt.Errorf("ice: %s: %w", op, post.ErrClosed)
	case errors.Is(err, pice.ErrCanceledByCaller):
		return fmt.Errorf("ice: %s: %w: %v", op, post.ErrTimeout, err)
	case errors.Is(err, pice.ErrNoCandidatePairs):
		return fmt.Errorf("ice: %s: %w: %v", op, post.ErrNoCandidates, err)
	case errors.Is(err, pice.ErrRemoteUfragEmpty), errors.Is(err, pice.ErrRemotePwdEmpty):
		return fmt.Errorf("ice: %s: %w: %v", op, post.ErrMalformed, err)
	}
	return fmt.Errorf("ice: %s: %w", op, err)
}
