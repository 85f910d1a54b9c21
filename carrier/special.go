package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Source is a Carrier over which messages can only be sent. Sources cannot
// be forked.
type Source struct {
	c *Carrier
	// ended, on a Responder's reply Source, is why the Responder closed
	// it: the peer closed its Carrier or reset it.
	ended atomic.Pointer[error]
}

// NewSource initiates a send-only Carrier to remote.
func NewSource(ctx context.Context, remote post.Remote, cfg *Config) (*Source, error) {
	c, err := initiate(ctx, remote, cfg, kindSource)
	if err != nil {
		return nil, err
	}
	return &Source{c: c}, nil
}

// SendMsg queues a message; see Carrier.SendMsg.
func (s *Source) SendMsg(ctx context.Context, m *post.Message) error {
	return s.why(s.c.SendMsg(ctx, m))
}

// Send queues content with default properties.
func (s *Source) Send(ctx context.Context, content []byte) error {
	return s.why(s.c.Send(ctx, content))
}

// why adds to a send that failed because a Responder closed its reply
// Source the reason it did: the peer closed (post.ErrPeerClosed, as on
// any Carrier whose peer closed) or reset its Carrier.
func (s *Source) why(err error) error {
	if p := s.ended.Load(); p != nil && errors.Is(err, post.ErrClosed) {
		return fmt.Errorf("%w: %w", *p, err)
	}
	return err
}

// Flush waits until queued messages are handed to the stack; see
// Carrier.Flush.
func (s *Source) Flush(ctx context.Context) error { return s.c.Flush(ctx) }

// Path returns the path in use.
func (s *Source) Path() post.Path { return s.c.Path() }

// Close flushes and closes the Source; see Carrier.Close.
func (s *Source) Close() error { return s.c.Close() }

// CloseContext is Close bounded by ctx; see Carrier.CloseContext.
func (s *Source) CloseContext(ctx context.Context) error { return s.c.CloseContext(ctx) }

// Abort ends the Source at once; see Carrier.Abort.
func (s *Source) Abort() error { return s.c.Abort() }

// Sink receives messages from every peer that initiates a Carrier to it.
// It never sends and cannot be forked; its listener refuses the peers'
// forks, so a peer's Fork or the fork's first messages fail instead of
// waiting unread.
type Sink struct {
	l    *Listener
	msgs chan queued[*post.Message]
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// NewSink listens on local and receives from all peers. It queues at
// most 64 complete messages, and each peer's Carrier holds at most one
// more while it waits for room; beyond that the Sink stops reading that
// peer and its stack applies back-pressure. The messages queued and
// those being gathered count against Config.ReceiveBudget until Receive
// returns them, so what the Sink holds stays within it however many
// peers send. A message over Config.MaxMessageSize (or the budget) ends
// its peer's Carrier with an abort: the peer's calls fail with an error
// wrapping post.ErrReset. A Responder does the same.
func NewSink(ctx context.Context, local post.Local, cfg *Config) (*Sink, error) {
	l, err := Listen(ctx, local, noForks(cfg))
	if err != nil {
		return nil, err
	}
	s := &Sink{l: l, msgs: make(chan queued[*post.Message], 64), done: make(chan struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

func (s *Sink) acceptLoop() {
	defer s.wg.Done()
	ctx := s.l.ctx // cancelled when the Sink closes its listener
	for {
		c, err := s.l.Accept(ctx)
		if err != nil {
			return
		}
		c.kind = kindSink
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			for {
				m, release, err := c.ready(ctx, ReadyOptions{}, true)
				if err != nil {
					refuse(c, err)
					return
				}
				select {
				case s.msgs <- queued[*post.Message]{m, release}:
				case <-s.done:
					unhold(release)
					return
				}
			}
		}()
	}
}

// Receive returns the next message from any peer. After Close it fails
// with post.ErrClosed: messages still queued are discarded.
func (s *Sink) Receive(ctx context.Context) (*post.Message, error) {
	select {
	case <-s.done:
		return nil, post.ErrClosed
	default:
	}
	select {
	case q := <-s.msgs:
		unhold(q.release)
		return q.v, nil
	case <-s.done:
		return nil, post.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Listener returns the Sink's listener, for its addresses.
func (s *Sink) Listener() *Listener { return s.l }

// Close stops the Sink and every Carrier it accepted.
func (s *Sink) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.l.Close()
		s.wg.Wait()
		discard(s.msgs)
	})
	return err
}

// Request is a message received by a Responder, with a Source that replies
// to its sender. Reply is the sender's Carrier, send-only, shared by all
// its requests: closing it ends the exchange with that peer, whose
// Receive then returns io.EOF and whose later requests are not
// delivered (its Close says so).
type Request struct {
	*post.Message
	Reply *Source
}

// Responder receives messages from many remote peers; each comes with a
// Source to send replies back to the peer it came from. Responders cannot
// be forked, and refuse the peers' forks as a Sink does. Requests are
// queued as a Sink queues messages.
type Responder struct {
	l    *Listener
	reqs chan queued[Request]
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// NewResponder listens on local.
func NewResponder(ctx context.Context, local post.Local, cfg *Config) (*Responder, error) {
	l, err := Listen(ctx, local, noForks(cfg))
	if err != nil {
		return nil, err
	}
	r := &Responder{l: l, reqs: make(chan queued[Request], 64), done: make(chan struct{})}
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

func (r *Responder) acceptLoop() {
	defer r.wg.Done()
	ctx := r.l.ctx // cancelled when the Responder closes its listener
	for {
		c, err := r.l.Accept(ctx)
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			reply := &Source{c: c}
			for {
				m, release, err := c.ready(ctx, ReadyOptions{}, true)
				if err != nil {
					var why error
					switch {
					case errors.Is(err, io.EOF):
						why = post.Errorf(post.ErrPeerClosed, "the requester closed its Carrier")
					case errors.Is(err, post.ErrReset):
						why = err
					}
					if why != nil {
						reply.ended.Store(&why)
					}
					refuse(c, err)
					return
				}
				select {
				case r.reqs <- queued[Request]{Request{Message: m, Reply: reply}, release}:
				case <-r.done:
					unhold(release)
					return
				}
			}
		}()
	}
}

// Receive returns the next request from any peer. After Close it fails
// with post.ErrClosed: requests still queued are discarded.
func (r *Responder) Receive(ctx context.Context) (Request, error) {
	select {
	case <-r.done:
		return Request{}, post.ErrClosed
	default:
	}
	select {
	case q := <-r.reqs:
		unhold(q.release)
		return q.v, nil
	case <-r.done:
		return Request{}, post.ErrClosed
	case <-ctx.Done():
		return Request{}, ctx.Err()
	}
}

// Serve calls handler for each request until ctx ends or the Responder is
// closed. Handlers run one at a time.
func (r *Responder) Serve(ctx context.Context, handler func(Request)) error {
	for {
		q, err := r.Receive(ctx)
		if err != nil {
			return err
		}
		handler(q)
	}
}

// Listener returns the Responder's listener, for its addresses.
func (r *Responder) Listener() *Listener { return r.l }

// Close stops the Responder and the Carriers it accepted.
func (r *Responder) Close() error {
	var err error
	r.once.Do(func() {
		close(r.done)
		err = r.l.Close()
		r.wg.Wait()
		discard(r.reqs)
	})
	return err
}

// refuse ends a Sink's or Responder's Carrier whose next message
// failed with err, if that message is one no one here can take (over
// MaxMessageSize or the receive budget). Abort tells the peer, whose
// calls fail with post.ErrReset, where an orderly close would drop that
// message and the ones after it unread while the peer's Close reported
// them delivered. Any other error leaves the orderly close: the peer
// closed or reset, or the application closed the reply Source, whose
// Close must not be cut short.
func refuse(c *Carrier, err error) {
	if errors.Is(err, post.ErrMessageTooLarge) {
		c.Abort()
	}
}

// noForks returns cfg with forking prohibited. Sinks and Responders never
// call AcceptFork, so their stacks refuse the peers' forks, which then
// fail at the forking side, instead of holding them unread.
func noForks(cfg *Config) *Config {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Policy = c.Policy.Clone()
	c.Policy.Feature(psi.Fork, policy.Prohibit)
	return &c
}

// queued is a message a Sink or Responder queued, with what gives back
// its room in the receive budget.
type queued[T any] struct {
	v       T
	release func()
}

func unhold(release func()) {
	if release != nil {
		release()
	}
}

// discard empties a closed Sink's or Responder's queue, giving back the
// room its messages took in the receive budget.
func discard[T any](ch chan queued[T]) {
	for {
		select {
		case q := <-ch:
			unhold(q.release)
		default:
			return
		}
	}
}
