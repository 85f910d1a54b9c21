package rendezvous

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/ice"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Client talks to a rendezvous Server.
type Client struct {
	// URL is the server's base URL, such as "https://host:8080";
	// requests go to URL + "/exchange".
	URL string
	// HTTP is the client used; nil means http.DefaultClient. Its timeout,
	// if any, must exceed the server's MaxWait.
	HTTP *http.Client
	// Key is this peer's identity; it signs every request.
	Key *Key
	// Self is the ID to register as; empty means Key.ID. A server
	// refuses any other (this is for tests of that).
	Self PeerID
}

func isNotSupported(err error) bool { return errors.Is(err, post.ErrNotSupported) }

// maxAuthRetries bounds the 401 answers in a row before Exchange gives up.
const maxAuthRetries = 3

// Exchange registers offer as Key's peer ID wanting to talk to peer and
// waits until peer has registered wanting this one, then returns peer's
// offer. It polls until ctx ends; errors wrap post.ErrTimeout (ctx
// expired), post.ErrMalformed (bad offer or answer), post.ErrInvalid
// (peer is this client itself), post.ErrAuthentication (the server does not accept the key),
// post.ErrRefused (rejected by the server) or post.ErrPolicyConflict
// (another poll for the same names displaced this one).
func (c *Client) Exchange(ctx context.Context, peer PeerID, offer Offer) (Offer, error) {
	offer.Controlling = false
	if c.Key == nil {
		return Offer{}, post.Errorf(post.ErrAuthentication, "rendezvous: the client has no Key")
	}
	self := c.Self
	if self == "" {
		self = c.Key.ID
	}
	if _, err := ParsePeerID(string(peer)); err != nil {
		return Offer{}, err
	}
	if self == peer {
		return Offer{}, post.Errorf(post.ErrInvalid, "rendezvous: self and peer are the same")
	}
	if err := offer.Validate(); err != nil {
		return Offer{}, err
	}
	body, err := json.Marshal(request{Self: self, Peer: peer, Offer: offer})
	if err != nil {
		return Offer{}, err
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	url := strings.TrimSuffix(c.URL, "/") + "/exchange"
	backoff, failures, denied := 100*time.Millisecond, 0, 0
	nonce := ""
	for {
		start := time.Now()
		answer, next, retry, err := c.poll(ctx, hc, url, body, nonce)
		nonce = next // each nonce is used once
		if err == nil {
			if answer.Controlling != Controlling(peer, self) {
				return Offer{}, post.Errorf(post.ErrMalformed, "rendezvous: server disagrees on the controlling side")
			}
			return answer, nil
		}
		if ctx.Err() != nil {
			return Offer{}, ctxErr(ctx)
		}
		if !retry {
			return Offer{}, err
		}
		if errors.Is(err, errNonce) && nonce != "" {
			continue
		}
		if errors.Is(err, errUnauthorized) {
			// Sign again over the fresh nonce, at once.
			if denied++; denied > maxAuthRetries || nonce == "" {
				return Offer{}, post.Errorf(post.ErrAuthentication, "%v", err)
			}
			continue
		}
		denied = 0
		if errors.Is(err, errUnreachable) {
			if failures++; failures >= 5 {
				return Offer{}, post.Errorf(post.ErrRefused, "%v", err)
			}
		} else {
			failures = 0
		}
		// Back off after errors, and after polls the server ended early,
		// so a misbehaving server is not hammered.
		if !errors.Is(err, errAgain) || time.Since(start) < minPoll {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return Offer{}, ctxErr(ctx)
			case <-t.C:
			}
			backoff = min(2*backoff, 5*time.Second)
		} else {
			backoff = 100 * time.Millisecond
		}
	}
}

// minPoll is the shortest poll after which the client polls again at once.
const minPoll = 50 * time.Millisecond

var (
	errAgain = errors.New("rendezvous: no answer yet")
	errBusy  = errors.New("rendezvous: server busy")
	// errNonce is the 401 answer to an unsigned request: sign over its
	// nonce.
	errNonce = errors.New("rendezvous: no nonce")
	// errUnauthorized is a 401: sign again over the fresh nonce.
	errUnauthorized = errors.New("rendezvous: unauthorized")
	// errUnreachable is a transport error, retried a few times.
	errUnreachable = errors.New("rendezvous: server unreachable")
)

// poll makes one long-poll request, signed over nonce unless it is
// empty (then it only fetches a nonce). It returns the nonce for the next
// request.
func (c *Client) poll(ctx context.Context, hc *http.Client, url string, body []byte, nonce string) (Offer, string, bool, error) {
	send := body
	if nonce == "" {
		send = nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(send))
	if err != nil {
		return Offer{}, "", false, fmt.Errorf("rendezvous: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if nonce != "" {
		k, sig := signRequest(c.Key, nonce, body)
		req.Header.Set(HeaderNonce, nonce)
		req.Header.Set(HeaderKey, k)
		req.Header.Set(HeaderSignature, sig)
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return Offer{}, "", true, errAgain
		}
		return Offer{}, "", true, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer resp.Body.Close()
	next := resp.Header.Get(HeaderNonce)
	if len(next) > 2*nonceLen {
		next = ""
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxRequestSize+1))
	if err != nil {
		return Offer{}, next, true, fmt.Errorf("%w: %w", errBusy, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		o, err := decodeAnswer(data)
		return o, next, false, err
	case http.StatusNoContent:
		return Offer{}, next, true, errAgain
	case http.StatusUnauthorized:
		if nonce == "" {
			return Offer{}, next, true, errNonce
		}
		return Offer{}, next, true, fmt.Errorf("%w: %s", errUnauthorized, serverMessage(resp, data))
	case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return Offer{}, next, true, fmt.Errorf("%w: %s", errBusy, resp.Status)
	case http.StatusConflict:
		return Offer{}, next, false, post.Errorf(post.ErrPolicyConflict, "rendezvous: %s", serverMessage(resp, data))
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return Offer{}, next, false, post.Errorf(post.ErrMalformed, "rendezvous: %s", serverMessage(resp, data))
	case http.StatusForbidden:
		return Offer{}, next, false, post.Errorf(post.ErrAuthentication, "rendezvous: %s", serverMessage(resp, data))
	}
	return Offer{}, next, false, post.Errorf(post.ErrRefused, "rendezvous: %s", serverMessage(resp, data))
}

// decodeAnswer parses and validates the body of a 200 answer.
func decodeAnswer(data []byte) (Offer, error) {
	if len(data) > MaxRequestSize {
		return Offer{}, post.Errorf(post.ErrMalformed, "rendezvous: answer too large")
	}
	var r response
	if err := json.Unmarshal(data, &r); err != nil {
		return Offer{}, post.Errorf(post.ErrMalformed, "rendezvous: bad answer: %v", err)
	}
	if err := r.Offer.Validate(); err != nil {
		return Offer{}, err
	}
	return r.Offer, nil
}

func serverMessage(resp *http.Response, data []byte) string {
	var e errorBody
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error
	}
	return resp.Status
}

func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("rendezvous: %w: %w", post.ErrTimeout, ctx.Err())
	}
	return fmt.Errorf("rendezvous: %w", ctx.Err())
}

// ConnectConfig configures Connect.
type ConnectConfig struct {
	// Key is this side's identity. It signs the requests to the server,
	// and Session.Security presents it to the peer.
	Key *Key
	// Self is the ID to register as; empty means Key.ID. Servers and
	// peers refuse any other (this is for tests of that).
	Self PeerID
	// Peer is the other side's ID.
	Peer PeerID
	// RendezvousURL is the server's base URL.
	RendezvousURL string
	// HTTP is the client for the server; nil means http.DefaultClient.
	HTTP *http.Client
	// ICE configures candidate gathering and checks.
	ICE ice.Config
	// Stacks names the protocol stacks this side can run over the path
	// (see RunsOverPath), in order of preference; empty means "fsp". They
	// travel in the offer, and both sides pick the same one (see
	// Session.Stack).
	Stacks []string
}

// Session is an established peer-to-peer datagram path.
type Session struct {
	// Conn carries datagrams to and from the peer over the selected
	// candidate pair. Closing it ends the session.
	Conn *ice.PacketConn
	// PeerAddr is the peer's address on the selected pair, to dial.
	PeerAddr net.Addr
	// Controlling is true on the side that should dial; the other side
	// should listen on Conn.
	Controlling bool
	// Local and Remote describe the selected candidate pair.
	Local, Remote ice.CandidateInfo
	// Self and Peer are the IDs the two sides registered as.
	Self, Peer PeerID
	// Stack names the protocol stack to run over the path: the
	// controlling side's most preferred stack that both sides offered.
	Stack string

	key                     *Key
	peerPin                 psi.Pin
	localUfrag, remoteUfrag string

	agent     *ice.Agent
	closeOnce sync.Once
	closeErr  error
}

// Close ends the session and any connection on its path, and releases
// its sockets.
func (s *Session) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.agent.Close() })
	return s.closeErr
}

// Connect gathers local candidates, exchanges them with Peer through the
// rendezvous server, runs ICE connectivity checks and returns the path.
// It blocks until the peer has also called Connect, the checks end, or ctx
// ends.
func Connect(ctx context.Context, cfg ConnectConfig) (*Session, error) {
	if cfg.Key == nil {
		return nil, post.Errorf(post.ErrAuthentication, "rendezvous: Connect needs a Key")
	}
	if cfg.Self == "" {
		cfg.Self = cfg.Key.ID
	}
	pin, err := cfg.Peer.Pin()
	if err != nil {
		return nil, err
	}
	if cfg.Self == cfg.Peer {
		return nil, post.Errorf(post.ErrInvalid, "rendezvous: self and peer are the same")
	}
	agent, err := ice.NewAgent(cfg.ICE)
	if err != nil {
		return nil, err
	}
	s, err := connect(ctx, cfg, agent)
	if err != nil {
		agent.Close()
		return nil, err
	}
	s.peerPin = pin
	return s, nil
}

func connect(ctx context.Context, cfg ConnectConfig, agent *ice.Agent) (*Session, error) {
	cands, err := agent.Gather(ctx)
	if err != nil {
		return nil, err
	}
	ufrag, pwd, err := agent.LocalCredentials()
	if err != nil {
		return nil, err
	}
	if len(cands) > ice.MaxCandidates {
		cands = cands[:ice.MaxCandidates]
	}
	stacks := cfg.Stacks
	if len(stacks) == 0 {
		stacks = defaultStacks
	}
	offer := Offer{Ufrag: ufrag, Pwd: pwd, Candidates: cands, Stacks: stacks}
	c := &Client{URL: cfg.RendezvousURL, HTTP: cfg.HTTP, Key: cfg.Key, Self: cfg.Self}
	answer, err := c.Exchange(ctx, cfg.Peer, offer)
	if err != nil {
		return nil, err
	}
	controlling := Controlling(cfg.Self, cfg.Peer)
	stack, err := AgreeStack(controlling, stacks, answer.Stacks)
	if err != nil {
		return nil, err
	}
	if err := agent.AddRemote(answer.Ufrag, answer.Pwd, answer.Candidates); err != nil {
		return nil, err
	}
	conn, err := agent.Connect(ctx, controlling)
	if err != nil {
		return nil, err
	}
	s := &Session{
		Conn: conn, PeerAddr: conn.RemoteAddr(), Controlling: controlling,
		Self: cfg.Self, Peer: cfg.Peer, Stack: stack, key: cfg.Key,
		localUfrag: ufrag, remoteUfrag: answer.Ufrag,
		agent: agent,
	}
	s.Local, s.Remote, _ = agent.Selected()
	return s, nil
}
