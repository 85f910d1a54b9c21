package association

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/internal/ice"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// RendezvousConfig tunes peer-to-peer establishment. STUN and TURN servers
// come from the Policy Context's ICEServers. This peer's key is
// Security.Certificates[0], an Ed25519 key (rendezvous.GenerateKey makes
// one); the peers authenticate each other by it, not by PSK or CA roots.
type RendezvousConfig struct {
	// HTTP is the client for the rendezvous server; nil means
	// http.DefaultClient.
	HTTP *http.Client
	// IncludeLoopback gathers loopback candidates, for tests on one host.
	IncludeLoopback bool
	// IPv4Only gathers IPv4 candidates only.
	IPv4Only bool
	// KeepAlive is the ICE keep-alive interval that holds NAT bindings
	// open; zero means 2 s.
	KeepAlive time.Duration
	// Peers pins human peer names to peer IDs: Remote.Peer and
	// Local.Peer may be a name listed here, or a peer ID itself.
	Peers map[string]rendezvous.PeerID
}

// PeerID resolves a peer name to the peer ID it stands for: the ID pinned
// to it in Peers, or the name itself if it is a peer ID. Errors wrap
// post.ErrAuthentication.
func (rc *RendezvousConfig) PeerID(name string) (rendezvous.PeerID, error) {
	if id, ok := rc.Peers[name]; ok {
		if _, err := id.Pin(); err != nil {
			return "", post.Errorf(post.ErrAuthentication, "peer %q is pinned to a malformed ID: %v", name, err)
		}
		return id, nil
	}
	id, err := rendezvous.ParsePeerID(name)
	if err != nil {
		return "", post.Errorf(post.ErrAuthentication, "peer %q is neither a peer ID nor pinned to one in Rendezvous.Peers", name)
	}
	return id, nil
}

// iceConfig builds the ICE configuration from the policy and settings.
func (a *Association) iceConfig() (ice.Config, error) {
	rc := a.cfg.Rendezvous
	cfg := ice.Config{
		NetworkTypes:      []string{ice.UDP4, ice.UDP6},
		IncludeLoopback:   rc.IncludeLoopback,
		KeepAliveInterval: rc.KeepAlive,
		Logger:            a.cfg.Logger,
	}
	if rc.IPv4Only {
		cfg.NetworkTypes = []string{ice.UDP4}
	}
	if rc.IncludeLoopback {
		cfg.IPFilter = func(ip netip.Addr) bool { return ip.IsLoopback() }
	}
	for _, s := range a.cfg.Policy.ICEServers {
		switch {
		case strings.HasPrefix(s.URL, "stun:"):
			cfg.STUN = append(cfg.STUN, s.URL)
		case strings.HasPrefix(s.URL, "turn:"):
			cfg.TURN = append(cfg.TURN, ice.TURNServer{URL: s.URL, Username: s.Username, Password: s.Password})
		default:
			return cfg, post.Errorf(post.ErrPolicyConflict, "ICE server %q is neither stun: nor turn:", s.URL)
		}
	}
	return cfg, nil
}

// p2pIdentity returns this end's key and the IDs to register as and to
// ask for. The key is Security.Certificates[0], which must be Ed25519.
func (a *Association) p2pIdentity() (key *rendezvous.Key, self, peer rendezvous.PeerID, err error) {
	if len(a.cfg.Security.Certificates) == 0 {
		return nil, "", "", post.Errorf(post.ErrAuthentication,
			"peer-to-peer needs this peer's key in Security.Certificates (see rendezvous.GenerateKey)")
	}
	if key, err = rendezvous.KeyFromCertificate(a.cfg.Security.Certificates[0]); err != nil {
		return nil, "", "", err
	}
	self = key.ID
	if a.cfg.Local.Peer != "" {
		if self, err = a.cfg.Rendezvous.PeerID(a.cfg.Local.Peer); err != nil {
			return nil, "", "", err
		}
	}
	if peer, err = a.cfg.Rendezvous.PeerID(a.cfg.Remote.Peer); err != nil {
		return nil, "", "", err
	}
	return key, self, peer, nil
}

// establishP2P rendezvouses with the peer, runs ICE, then a datagram
// stack over the selected pair: the ICE-controlling side dials, the other
// accepts. The stacks offered are those the policy allows that can run
// over a path they did not open (psi.PacketDialer and
// psi.PacketListener), in the policy's order; both ends run the
// controlling side's first choice that the other offered too. Both ends
// authenticate each other by the keys their peer IDs name.
func (a *Association) establishP2P(ctx context.Context) (psi.Transient, error) {
	r := a.cfg.Remote
	if r.Rendezvous == "" {
		return nil, post.Errorf(post.ErrNoCandidates, "a peer-to-peer remote needs Remote.Rendezvous")
	}
	key, self, peer, err := a.p2pIdentity()
	if err != nil {
		return nil, err
	}
	stacks, err := a.stacks()
	if err != nil {
		return nil, err
	}
	var names []string
	byName := map[string]psi.Stack{}
	for _, s := range stacks {
		if rendezvous.RunsOverPath(s) && byName[s.Name()] == nil && len(names) < rendezvous.MaxStacks {
			names = append(names, s.Name())
			byName[s.Name()] = s
		}
	}
	if len(names) == 0 {
		return nil, post.Errorf(post.ErrNoCandidates, "peer-to-peer needs a datagram stack that runs over the ICE path (FSP or QUIC), which the policy rules out")
	}
	icfg, err := a.iceConfig()
	if err != nil {
		return nil, err
	}
	a.log.Debug("rendezvous", "self", self, "peer", peer, "name", r.Peer, "server", r.Rendezvous, "stacks", names)
	sess, err := rendezvous.Connect(ctx, rendezvous.ConnectConfig{
		Key:           key,
		Self:          self,
		Peer:          peer,
		RendezvousURL: r.Rendezvous,
		HTTP:          a.cfg.Rendezvous.HTTP,
		ICE:           icfg,
		Stacks:        names,
	})
	if err != nil {
		return nil, &post.OpError{Op: "rendezvous", Path: r.String(), Err: err}
	}
	a.log.Info("ice selected", "local", sess.Local, "remote", sess.Remote, "controlling", sess.Controlling, "stack", sess.Stack)
	cfg := a.TransientConfig(netip.AddrPort{})
	t, err := sess.Establish(ctx, byName[sess.Stack], cfg)
	if err != nil {
		return nil, &post.OpError{Op: "initiate", Stack: sess.Stack, Path: sess.PeerAddrPort().String(), Err: err}
	}
	a.mu.Lock()
	if !sess.Controlling {
		// Both ends share the dialler's Association ID.
		a.id = t.Association()
	}
	a.winner = &Winner{Stack: sess.Stack, Remote: sess.PeerAddrPort(), At: time.Now(), Attempts: 1}
	a.mu.Unlock()
	return &p2pTransient{Transient: t, sess: sess}, nil
}

// p2pTransient is a transient over an ICE session. The transient holds
// the session's path and closes it once its stack is done with it.
type p2pTransient struct {
	psi.Transient
	sess *rendezvous.Session
}

// Path reports the transient's path with the ICE candidate types.
func (t *p2pTransient) Path() post.Path {
	p := t.Transient.Path()
	p.Interface = fmt.Sprintf("ice:%s/%s", t.sess.Local.Type, t.sess.Remote.Type)
	return p
}

// The embedded interface hides the transient's optional methods; these
// pass them on, so a P2P Carrier behaves as any other.

// PeerIdentity reports the transient's verified peer.
func (t *p2pTransient) PeerIdentity() psi.Identity {
	id, _ := psi.PeerIdentityOf(t.Transient)
	return id
}

// AbortMessage abandons the message being written, as the stack does.
func (t *p2pTransient) AbortMessage(ctx context.Context) error {
	return psi.AbortMessage(ctx, t.Transient)
}

// Abort resets the peer at once, then releases the path.
func (t *p2pTransient) Abort(err error) {
	psi.Abort(t.Transient, err)
	t.sess.Close()
}

// CloseContext is Close with the linger bounded by ctx.
func (t *p2pTransient) CloseContext(ctx context.Context) error {
	return psi.CloseContext(ctx, t.Transient)
}

// Session returns the ICE session, for its selected candidates.
func (t *p2pTransient) Session() *rendezvous.Session { return t.sess }

// Close closes the transient; its stack closes the path once done.
func (t *p2pTransient) Close() error { return t.Transient.Close() }

// The optional interfaces of the transient underneath show through.
var (
	_ psi.PeerIdentifier = (*p2pTransient)(nil)
	_ psi.Flusher        = (*p2pTransient)(nil)
	_ psi.ContextCloser  = (*p2pTransient)(nil)
	_ psi.Aborter        = (*p2pTransient)(nil)
	_ psi.MessageAborter = (*p2pTransient)(nil)
)

// Flush sends the messages held back by WriteOptions.More.
func (t *p2pTransient) Flush(ctx context.Context) error {
	if f, ok := t.Transient.(psi.Flusher); ok {
		return f.Flush(ctx)
	}
	return nil
}

// Class reports the traffic class of the transient underneath.
func (t *p2pTransient) Class() psi.TrafficClass {
	if c, ok := t.Transient.(interface{ Class() psi.TrafficClass }); ok {
		return c.Class()
	}
	return psi.Wine
}
