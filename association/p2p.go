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
	"github.com/postsockets/postsockets/psi/fsp"
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

// establishP2P rendezvouses with the peer, runs ICE, then FSP over the
// selected pair: the ICE-controlling side dials, the other accepts. Both
// ends authenticate each other by the keys their peer IDs name.
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
	if !containsStack(stacks, fspName) {
		return nil, post.Errorf(post.ErrNoCandidates, "peer-to-peer runs FSP, which the policy rules out")
	}
	icfg, err := a.iceConfig()
	if err != nil {
		return nil, err
	}
	a.log.Debug("rendezvous", "self", self, "peer", peer, "name", r.Peer, "server", r.Rendezvous)
	sess, err := rendezvous.Connect(ctx, rendezvous.ConnectConfig{
		Key:           key,
		Self:          self,
		Peer:          peer,
		RendezvousURL: r.Rendezvous,
		HTTP:          a.cfg.Rendezvous.HTTP,
		ICE:           icfg,
	})
	if err != nil {
		return nil, &post.OpError{Op: "rendezvous", Path: r.String(), Err: err}
	}
	a.log.Info("ice selected", "local", sess.Local, "remote", sess.Remote, "controlling", sess.Controlling)
	stack := &fsp.Stack{Transport: sess.Transport()}
	cfg := a.TransientConfig(netip.AddrPort{})
	cfg.Local = netip.AddrPort{}
	cfg.Security = sess.Security(cfg.Security)
	var t psi.Transient
	var ln psi.Listener
	if sess.Controlling {
		t, err = stack.Dial(ctx, sess.PeerAddrPort(), cfg)
	} else {
		ln, err = stack.Listen(ctx, netip.AddrPort{}, cfg)
		if err == nil {
			t, err = acceptPeer(ctx, ln, sess, cfg.Handshake())
		}
	}
	if err == nil {
		// The handshake checked the pin; check again that it was this
		// peer's, whichever side this is.
		err = sess.CheckPeer(peerChain(t))
	}
	if err != nil {
		if t != nil {
			t.Close()
		}
		if ln != nil {
			ln.Close()
		}
		sess.Close()
		return nil, &post.OpError{Op: "initiate", Stack: fspName, Path: sess.PeerAddrPort().String(), Err: err}
	}
	a.mu.Lock()
	if !sess.Controlling {
		// Both ends share the dialler's Association ID.
		a.id = t.Association()
	}
	a.winner = &Winner{Stack: fspName, Remote: sess.PeerAddrPort(), At: time.Now(), Attempts: 1}
	a.mu.Unlock()
	return &p2pTransient{Transient: t, ln: ln, sess: sess}, nil
}

const fspName = "fsp"

func containsStack(stacks []psi.Stack, name string) bool {
	for _, s := range stacks {
		if s.Name() == name {
			return true
		}
	}
	return false
}

// p2pTransient owns the ICE session under an FSP transient.
type p2pTransient struct {
	psi.Transient
	ln   psi.Listener
	sess *rendezvous.Session
}

// Path reports the FSP path with the ICE candidate types.
func (t *p2pTransient) Path() post.Path {
	p := t.Transient.Path()
	p.Interface = fmt.Sprintf("ice:%s/%s", t.sess.Local.Type, t.sess.Remote.Type)
	return p
}

// The embedded interface hides the FSP transient's optional methods;
// these pass them on, so a P2P Carrier behaves as any FSP one.

// PeerIdentity reports the FSP transient's verified peer.
func (t *p2pTransient) PeerIdentity() psi.Identity {
	id, _ := psi.PeerIdentityOf(t.Transient)
	return id
}

// AbortMessage abandons the message being written, as FSP does.
func (t *p2pTransient) AbortMessage(ctx context.Context) error {
	return psi.AbortMessage(ctx, t.Transient)
}

// Abort resets the peer at once, then releases the path.
func (t *p2pTransient) Abort(err error) {
	psi.Abort(t.Transient, err)
	t.release()
}

// CloseContext is Close with the linger bounded by ctx.
func (t *p2pTransient) CloseContext(ctx context.Context) error {
	err := psi.CloseContext(ctx, t.Transient)
	t.release()
	return err
}

// Session returns the ICE session, for its selected candidates.
func (t *p2pTransient) Session() *rendezvous.Session { return t.sess }

func (t *p2pTransient) Close() error {
	err := t.Transient.Close()
	t.release()
	return err
}

// release closes the listener and the ICE session under the transient.
func (t *p2pTransient) release() {
	if t.ln != nil {
		t.ln.Close()
	}
	t.sess.Close()
}

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
