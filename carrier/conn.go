package carrier

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/internal/assoccache"
	"github.com/postsockets/postsockets/post"
)

// Conn adapts a Carrier to net.Conn, so byte-stream code such as net/http
// runs over any stack. Each Write sends one Message; Read returns message
// content in order, ignoring message boundaries.
type Conn struct {
	c      *Carrier
	rd, wd *deadline
	once   sync.Once
	closed atomic.Bool
}

var _ net.Conn = (*Conn)(nil)

// NewConn wraps c.
func NewConn(c *Carrier) *Conn {
	return &Conn{c: c, rd: newDeadline(), wd: newDeadline()}
}

// Carrier returns the wrapped Carrier.
func (n *Conn) Carrier() *Carrier { return n.c }

// Read reads message content. Empty messages carry no bytes: Read
// skips them, and returns 0 only with an error.
func (n *Conn) Read(p []byte) (int, error) {
	if n.closed.Load() {
		return 0, net.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		m, err := n.c.Ready(n.rd.ctx(), ReadyOptions{Max: len(p)})
		if err == nil {
			if len(m.Content) == 0 {
				// An empty message, or the end of one sent alone: no
				// bytes of the stream, so wait for the next.
				continue
			}
			return copy(p, m.Content), nil
		}
		if n.closed.Load() {
			return 0, net.ErrClosed
		}
		if errors.Is(err, errDeadline) {
			if n.rd.expired() {
				return 0, os.ErrDeadlineExceeded
			}
			continue // the deadline moved while we waited
		}
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		return 0, err
	}
}

// Write sends p as one Message (or several, if p exceeds the Carrier's
// message limit). p is copied.
func (n *Conn) Write(p []byte) (int, error) {
	if n.closed.Load() {
		return 0, net.ErrClosed
	}
	limit := int(min(n.c.cfg.maxMessage(), 1<<30))
	written := 0
	for len(p) > 0 || written == 0 {
		chunk := p[:min(len(p), limit)]
		err := n.c.Send(n.wd.ctx(), append([]byte(nil), chunk...))
		if err != nil {
			if n.closed.Load() {
				return written, net.ErrClosed
			}
			if errors.Is(err, errDeadline) {
				return written, os.ErrDeadlineExceeded
			}
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
		if len(chunk) == 0 {
			break
		}
	}
	return written, nil
}

// Close wakes blocked Read and Write calls at once, then closes the
// Carrier (see Carrier.Close). Later calls fail with net.ErrClosed.
func (n *Conn) Close() error {
	err := net.ErrClosed
	n.once.Do(func() {
		n.closed.Store(true)
		n.rd.set(time.Unix(1, 0))
		n.wd.set(time.Unix(1, 0))
		err = n.c.Close()
	})
	return err
}

// Addr is a net.Addr naming the stack as its network.
type Addr struct {
	Stack string
	netip.AddrPort
}

// Network returns the stack name.
func (a Addr) Network() string { return a.Stack }

// LocalAddr returns the local end of the current path.
func (n *Conn) LocalAddr() net.Addr { return Addr{n.c.Stack(), n.c.Path().Local} }

// RemoteAddr returns the remote end of the current path.
func (n *Conn) RemoteAddr() net.Addr { return Addr{n.c.Stack(), n.c.Path().Remote} }

// SetDeadline sets both deadlines.
func (n *Conn) SetDeadline(t time.Time) error {
	if n.closed.Load() {
		return net.ErrClosed
	}
	n.rd.set(t)
	n.wd.set(t)
	return nil
}

// SetReadDeadline sets the read deadline; it interrupts a blocked Read.
func (n *Conn) SetReadDeadline(t time.Time) error {
	if n.closed.Load() {
		return net.ErrClosed
	}
	n.rd.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline.
func (n *Conn) SetWriteDeadline(t time.Time) error {
	if n.closed.Load() {
		return net.ErrClosed
	}
	n.wd.set(t)
	return nil
}

// errDeadline is what a Conn's deadline context reports, as the context
// contract asks.
var errDeadline = context.DeadlineExceeded

// deadline is a resettable deadline whose channel closes when it passes.
type deadline struct {
	mu    sync.Mutex
	t     time.Time
	timer *time.Timer
	gen   uint64 // counts sets; a timer of an earlier one closes nothing
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setLocked(t)
}

func (d *deadline) setLocked(t time.Time) {
	d.gen++
	if d.timer != nil {
		// Stop fails if the timer has fired and its function waits for
		// mu: the generation tells that function it is stale.
		d.timer.Stop()
		d.timer = nil
	}
	d.t = t
	if isClosed(d.ch) && (t.IsZero() || time.Until(t) > 0) {
		d.ch = make(chan struct{})
	}
	switch dur := time.Until(t); {
	case t.IsZero():
	case dur > 0:
		ch, gen := d.ch, d.gen
		d.timer = time.AfterFunc(dur, func() {
			d.mu.Lock()
			if d.gen == gen && !isClosed(ch) {
				close(ch)
			}
			d.mu.Unlock()
		})
	case !isClosed(d.ch):
		close(d.ch)
	}
}

func (d *deadline) expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.t.IsZero() && !time.Now().Before(d.t)
}

func (d *deadline) ctx() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return chanCtx(d.ch)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// chanCtx is a context cancelled when its channel closes.
type chanCtx chan struct{}

func (c chanCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c chanCtx) Done() <-chan struct{}       { return c }
func (c chanCtx) Value(any) any               { return nil }
func (c chanCtx) Err() error {
	if isClosed(c) {
		return errDeadline
	}
	return nil
}

// NetListener adapts a Listener to net.Listener.
type NetListener struct {
	l      *Listener
	ctx    context.Context
	cancel context.CancelFunc
}

var _ net.Listener = (*NetListener)(nil)

// NewNetListener wraps l.
func NewNetListener(l *Listener) *NetListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &NetListener{l: l, ctx: ctx, cancel: cancel}
}

// Accept waits for the next Carrier and returns it as a Conn.
func (n *NetListener) Accept() (net.Conn, error) {
	c, err := n.l.Accept(n.ctx)
	if err != nil {
		if n.ctx.Err() != nil {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	return NewConn(c), nil
}

// Close closes the Listener.
func (n *NetListener) Close() error {
	n.cancel()
	return n.l.Close()
}

// Addr returns the first stack's address.
func (n *NetListener) Addr() net.Addr { return Addr{"post", n.l.Addr()} }

// Dialer returns a function with the signature of net.Dialer.DialContext
// that initiates a Carrier to address, for http.Transport.DialContext.
// Carriers to the same address share one Association, so later dials
// reuse the stack and path that won the first race. It keeps the
// Associations of the 1,024 addresses dialled most recently.
func Dialer(cfg *Config) func(ctx context.Context, network, address string) (net.Conn, error) {
	return dialer(cfg, &assoccache.Cache{})
}

// dialer is Dialer keeping its Associations in assocs.
func dialer(cfg *Config, assocs *assoccache.Cache) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, _, address string) (net.Conn, error) {
		var c Config
		if cfg != nil {
			c = *cfg
		}
		if a := assocs.Get(address); a != nil && c.Association == nil {
			c.Association = a
		}
		car, err := Initiate(ctx, post.RemoteName(address), &c)
		if err != nil {
			return nil, err
		}
		if c.Association == nil {
			assocs.Add(address, car.Association())
		}
		return NewConn(car), nil
	}
}
