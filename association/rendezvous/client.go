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
	"github.com/postsockets/postsockets/psi/fsp"
)

// Client talks to a rendezvous Server.
type Client struct {
	// URL is the server's base URL, such as "http://host:8080"; requests
	// go to URL + "/exchange".
	URL string
	// HTTP is the client used; nil means http.DefaultClient. Its timeout,
	// if any, must exceed the server's MaxWait.
	HTTP *http.Client
}

func isNotSupported(err error) bool { return errors.Is(err, post.ErrNotSupported) }

// Exchange registers offer as self wanting to talk to peer and waits until
// peer has registered wanting self, then returns peer's offer. It polls
// until ctx ends; errors wrap post.ErrTimeout (ctx expired),
// post.ErrMalformed (bad offer or answer), post.ErrRefused (rejected by
// the server) or post.ErrPolicyConflict (another poll for the same names
// displaced this one).
func (c *Client) Exchange(ctx context.Context, self, peer string, offer Offer) (Offer, error) {
	offer.Controlling = false
	if !ValidID(self) || !ValidID(peer) || self == peer {
		return Offer{}, post.Errorf(post.ErrMalformed, "rendezvous: bad names %q, %q", self, peer)
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
	backoff, failures := 100*time.Millisecond, 0
	for {
		start := time.Now()
		answer, retry, err := c.poll(ctx, hc, url, body)
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
	// errUnreachable is a transport error, retried a few times.
	errUnreachable = errors.New("rendezvous: server unreachable")
)

// poll makes one long-poll request.
func (c *Client) poll(ctx context.Context, hc *http.Client, url string, body []byte) (Offer, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Offer{}, false, fmt.Errorf("rendezvous: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return Offer{}, true, errAgain
		}
		return Offer{}, true, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxRequestSize+1))
	if err != nil {
		return Offer{}, true, fmt.Errorf("%w: %w", errBusy, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		o, err := decodeAnswer(data)
		return o, false, err
	case http.StatusNoContent:
		return Offer{}, true, errAgain
	case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return Offer{}, true, fmt.Errorf("%w: %s", errBusy, resp.Status)
	case http.StatusConflict:
		return Offer{}, false, post.Errorf(post.ErrPolicyConflict, "rendezvous: %s", serverMessage(resp, data))
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return Offer{}, false, post.Errorf(post.ErrMalformed, "rendezvous: %s", serverMessage(resp, data))
	}
	return Offer{}, false, post.Errorf(post.ErrRefused, "rendezvous: %s", serverMessage(resp, data))
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
	// Self and Peer are this side's and the other side's names.
	Self, Peer string
	// RendezvousURL is the server's base URL.
	RendezvousURL string
	// HTTP is the client for the server; nil means http.DefaultClient.
	HTTP *http.Client
	// ICE configures candidate gathering and checks.
	ICE ice.Config
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

	agent     *ice.Agent
	mu        sync.Mutex
	transport *fsp.Transport // set by FSP
}

// Close ends the session, any FSP connection on it, and releases its
// sockets.
func (s *Session) Close() error {
	s.mu.Lock()
	t := s.transport
	s.mu.Unlock()
	if t != nil {
		t.Close()
	}
	return s.agent.Close()
}

// Connect gathers local candidates, exchanges them with Peer through the
// rendezvous server, runs ICE connectivity checks and returns the path.
// It blocks until the peer has also called Connect, the checks end, or ctx
// ends.
func Connect(ctx context.Context, cfg ConnectConfig) (*Session, error) {
	if !ValidID(cfg.Self) || !ValidID(cfg.Peer) || cfg.Self == cfg.Peer {
		return nil, post.Errorf(post.ErrMalformed, "rendezvous: bad names %q, %q", cfg.Self, cfg.Peer)
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
	c := &Client{URL: cfg.RendezvousURL, HTTP: cfg.HTTP}
	answer, err := c.Exchange(ctx, cfg.Self, cfg.Peer, Offer{Ufrag: ufrag, Pwd: pwd, Candidates: cands})
	if err != nil {
		return nil, err
	}
	if err := agent.AddRemote(answer.Ufrag, answer.Pwd, answer.Candidates); err != nil {
		return nil, err
	}
	controlling := Controlling(cfg.Self, cfg.Peer)
	conn, err := agent.Connect(ctx, controlling)
	if err != nil {
		return nil, err
	}
	s := &Session{Conn: conn, PeerAddr: conn.RemoteAddr(), Controlling: controlling, agent: agent}
	s.Local, s.Remote, _ = agent.Selected()
	return s, nil
}
