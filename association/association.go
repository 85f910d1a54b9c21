// Package association keeps long-lived state between a Local and a Remote:
// trust settings, resumption state, which stack won the last race, and what
// is known about each Path. It resolves the Remote, gathers Locals, and
// races candidate paths × stacks with happy eyeballs (RFC 8305) to establish
// transients.
package association

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Resolver resolves host names; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures an Association. The zero value of every field is a
// sane default, but Remote is needed to establish transients.
type Config struct {
	Local    post.Local
	Remote   post.Remote
	Security psi.Security
	Policy   policy.Context
	// Stacks are the protocol stacks to race, in default preference order.
	// Nil means the stacks given by the caller's package default.
	Stacks []psi.Stack
	// Transient is the template for each transient's configuration;
	// Security, Association and Local are filled in per attempt.
	Transient psi.Config
	// Resolver defaults to net.DefaultResolver.
	Resolver Resolver
	// FailureTTL is how long a failed candidate is tried last; zero means
	// 5 minutes.
	FailureTTL time.Duration
	// Rendezvous tunes peer-to-peer establishment, used when Remote.Peer
	// is set.
	Rendezvous RendezvousConfig
	Logger     *slog.Logger
}

// Winner records the stack and address that last won a race.
type Winner struct {
	Stack  string
	Remote netip.AddrPort
	Local  netip.AddrPort
	At     time.Time
	// Attempts is how many attempts the race started.
	Attempts int
}

// Association is durable state between a Local and a Remote that Carriers
// share. It is safe for concurrent use.
type Association struct {
	id  [16]byte
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	winner   *Winner
	failures map[candidateKey]time.Time
	paths    map[netip.AddrPort]post.Path

	bg losers // races' losing attempts still being collected
}

type candidateKey struct {
	stack  string
	local  netip.Addr
	remote netip.AddrPort
}

// New makes an Association. It sends no packets.
func New(cfg Config) (*Association, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	a := &Association{
		cfg:      cfg,
		failures: make(map[candidateKey]time.Time),
		paths:    make(map[netip.AddrPort]post.Path),
	}
	if _, err := rand.Read(a.id[:]); err != nil {
		return nil, err
	}
	if a.cfg.Security.SessionCache == nil {
		a.cfg.Security.SessionCache = tls.NewLRUClientSessionCache(8)
	}
	if a.cfg.Security.ServerName == "" && cfg.Remote.Name != "" {
		a.cfg.Security.ServerName = cfg.Remote.AuthName()
	}
	a.log = cfg.Logger
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("association", hex.EncodeToString(a.id[:4]))
	return a, nil
}

// FromTransient makes the listener-side Association of an accepted
// transient.
func FromTransient(t psi.Transient, cfg Config) *Association {
	a := &Association{
		id:       t.Association(),
		cfg:      cfg,
		failures: make(map[candidateKey]time.Time),
		paths:    make(map[netip.AddrPort]post.Path),
	}
	a.log = cfg.Logger
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	p := t.Path()
	a.cfg.Remote = post.RemoteAddr(p.Remote)
	a.winner = &Winner{Stack: t.Stack(), Remote: p.Remote, Local: p.Local, At: time.Now()}
	return a
}

// ID returns the Association's identifier, shared with the peer.
func (a *Association) ID() [16]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}

// Local returns the configured Local.
func (a *Association) Local() post.Local { return a.cfg.Local }

// Remote returns the configured Remote.
func (a *Association) Remote() post.Remote { return a.cfg.Remote }

// Security returns the trust settings.
func (a *Association) Security() *psi.Security { return &a.cfg.Security }

// Policy returns the Policy Context.
func (a *Association) Policy() *policy.Context { return &a.cfg.Policy }

// Config returns a copy of the configuration.
func (a *Association) Config() Config { return a.cfg }

// Winner returns the stack and path that last won, if any.
func (a *Association) Winner() (Winner, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.winner == nil {
		return Winner{}, false
	}
	return *a.winner, true
}

// Forget drops the cached winner and failures.
func (a *Association) Forget() {
	a.mu.Lock()
	a.winner = nil
	clear(a.failures)
	a.mu.Unlock()
}

// ObservePath records what a transient learned about a path.
func (a *Association) ObservePath(p post.Path) {
	if !p.Remote.IsValid() {
		return
	}
	a.mu.Lock()
	a.paths[p.Remote] = p
	a.mu.Unlock()
}

// Paths returns what is known about each path to the remote.
func (a *Association) Paths() []post.Path {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]post.Path, 0, len(a.paths))
	for _, p := range a.paths {
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y post.Path) int { return x.Remote.Compare(y.Remote) })
	return out
}

func (a *Association) failureTTL() time.Duration {
	if a.cfg.FailureTTL > 0 {
		return a.cfg.FailureTTL
	}
	return 5 * time.Minute
}

// TransientConfig returns the per-attempt configuration for a dial from
// local.
func (a *Association) TransientConfig(local netip.AddrPort) *psi.Config {
	c := a.cfg.Transient
	c.Security = a.cfg.Security
	c.Association = a.ID()
	c.Disabled |= a.cfg.Policy.Disabled() // prohibited features stay off in the stack too
	if local.IsValid() {
		c.Local = local
	} else if a.cfg.Local.Addr.IsValid() {
		c.Local = a.cfg.Local.Addr
	}
	if c.Logger == nil {
		c.Logger = a.cfg.Logger
	}
	return &c
}

// Resolve resolves the Remote to addresses, IPv6 first.
func (a *Association) Resolve(ctx context.Context) ([]netip.AddrPort, error) {
	r := a.cfg.Remote
	if len(r.Addrs) > 0 {
		return slices.Clone(r.Addrs), nil
	}
	if r.Name == "" {
		return nil, post.Errorf(post.ErrUnknownHost, "association has no remote")
	}
	host, port, err := r.HostPort()
	if err != nil {
		// Not "host:port": the caller's mistake, not the network's.
		return nil, post.Errorf(post.ErrInvalid, "%v", err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), port)}, nil
	}
	res := a.cfg.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	ips, err := res.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && (de.IsNotFound || de.IsTemporary) || len(ips) == 0 {
			return nil, &post.OpError{Op: "resolve", Path: host, Err: errors.Join(post.ErrUnknownHost, err)}
		}
		return nil, &post.OpError{Op: "resolve", Path: host, Err: err}
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), port))
	}
	return InterleaveFamilies(out), nil
}

// InterleaveFamilies orders addresses per RFC 8305 section 4: IPv6 first,
// then alternating families, keeping the resolver's order within each.
func InterleaveFamilies(addrs []netip.AddrPort) []netip.AddrPort {
	var v6, v4 []netip.AddrPort
	for _, a := range addrs {
		if a.Addr().Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for i := 0; i < len(v6) || i < len(v4); i++ {
		if i < len(v6) {
			out = append(out, v6[i])
		}
		if i < len(v4) {
			out = append(out, v4[i])
		}
	}
	return out
}
