// Package carrier is the application entry point of Post Sockets. A
// Carrier sends and receives Messages to one remote endpoint over whichever
// protocol stack won the race for its Association; Listeners, Sources,
// Sinks and Responders are its special kinds. Carriers can be forked into
// new Carriers to the same peer.
package carrier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/internal/sockerr"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Config configures Carriers and Listeners. The zero value is usable: it
// races the default stacks with no policy constraints.
type Config struct {
	// Association, if set, is shared instead of making a new one; Local,
	// Security, Policy and Stacks are then taken from it.
	Association *association.Association
	Local       post.Local
	Security    psi.Security
	Policy      policy.Context
	// SystemPolicy is merged under Policy (see policy.Merge).
	SystemPolicy *policy.Context
	// Stacks to race; nil means DefaultStacks().
	Stacks []psi.Stack
	// MaxMessageSize bounds a whole message in either direction: SendMsg
	// refuses a larger one and Receive fails on one (both with errors
	// wrapping post.ErrMessageTooLarge). Messages in parts
	// (NewMessageWriter, Ready with Max) are not bounded. Zero means
	// psi.DefaultMaxMessageSize. On a Listener, ReceiveBudget bounds
	// what all its Carriers gather at once.
	MaxMessageSize int64
	// ReceiveBudget bounds, on a Listener, the memory of whole messages
	// from its peers: the buffers in which Receive gathers them on every
	// Carrier the Listener accepted (and their forks), and the messages
	// a Sink or Responder queued for the application. A Receive that
	// finds no room waits, reading nothing, so the stack's flow control
	// holds the sender back. One source (an IPv4 address or an IPv6 /64)
	// takes at most a quarter. Room for one whole message is kept for
	// the gathers' turns, which sources take in rotation, so honest
	// gathers never deadlock. While others wait, a gather that stalled
	// (under 16 KiB read in the last second, time in which its transient
	// held data from the peer that it had not read, or the process did
	// not run on time, excepted; or under 64 KiB in the last 4 s) may
	// have its Carrier ended:
	// Receive fails with an error wrapping post.ErrBackpressure and the
	// peer's with post.ErrReset. A Carrier's first 128 KiB of a message
	// is not counted, so small messages never wait. A whole message
	// over ReceiveBudget+128 KiB fails Receive with an error wrapping
	// post.ErrMessageTooLarge, as one over MaxMessageSize does. Zero
	// means 4 × MaxMessageSize, at least 64 MiB; negative, no bound.
	// Initiated Carriers, and Ready with Max, are not bounded by it.
	ReceiveBudget int64
	// SendBuffer bounds the bytes of messages queued but not yet sent,
	// each counted with 256 bytes more for what its entry holds, so that
	// empty messages cannot queue without bound; SendMsg blocks when it
	// is full. Zero means 4 MiB.
	SendBuffer int64
	// IdleTimeout, if set, closes the transient after that long without
	// traffic; the Carrier turns dormant and the next Send revives it. Only
	// a Carrier from Initiate can be revived: on one from Accept, or a
	// fork, Send then fails with an error wrapping post.ErrDormant.
	// Only an idle timeout makes a Carrier dormant: after the peer closes,
	// Send fails with an error wrapping post.ErrPeerClosed.
	IdleTimeout time.Duration
	// Linger bounds Close: sending what is queued and waiting until the
	// peer's stack has it. Zero means psi.DefaultLinger (3 s). Use
	// CloseContext for a per-call bound.
	Linger time.Duration
	// Class is the traffic class of Carriers forked with Fork.
	Class psi.TrafficClass
	// Lazy makes Initiate return a dormant Carrier without sending a
	// packet; the first message establishes the transient, as 0-RTT data
	// when it is Idempotent and the Association holds a session ticket.
	// Until then Receive waits for that Send: a read dials nothing.
	Lazy bool
	// Transient is the template for the stacks' configuration (timeouts,
	// keep-alive). Security, Local and MaxMessageSize are filled in.
	Transient psi.Config
	// Rendezvous tunes peer-to-peer Initiate (a Remote with Peer set).
	Rendezvous association.RendezvousConfig
	Logger     *slog.Logger
	// OnEvent, if set, receives the Carrier's connection-level events
	// (carrier/events.go), one at a time from a goroutine of the
	// Carrier's own; Closed is the last. Its forks, which share the
	// Config, report through it too, each from its own goroutine (so
	// calls for different forks may run at once): Event.Fork tells them
	// apart.
	OnEvent func(Event)
}

func (c *Config) sendBuffer() int64 {
	if c.SendBuffer > 0 {
		return c.SendBuffer
	}
	return 4 << 20
}

func (c *Config) maxMessage() int64 {
	if c.MaxMessageSize > 0 {
		return c.MaxMessageSize
	}
	return psi.DefaultMaxMessageSize
}

func (c *Config) linger() time.Duration {
	if c.Linger > 0 {
		return c.Linger
	}
	return psi.DefaultLinger
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Config) stacks() []psi.Stack {
	if len(c.Stacks) > 0 {
		return c.Stacks
	}
	return DefaultStacks()
}

// associationConfig merges policies and builds the Association config.
func (c *Config) associationConfig(remote post.Remote) (association.Config, error) {
	pol := c.Policy
	if c.SystemPolicy != nil {
		var err error
		if pol, err = policy.Merge(*c.SystemPolicy, c.Policy); err != nil {
			return association.Config{}, err
		}
	}
	t := c.Transient
	t.MaxMessageSize = c.maxMessage()
	if t.Linger <= 0 {
		t.Linger = c.Linger
	}
	t.Events = t.Events || c.OnEvent != nil
	return association.Config{
		Local:      c.Local,
		Remote:     remote,
		Security:   c.Security,
		Policy:     pol,
		Stacks:     c.stacks(),
		Transient:  t,
		Rendezvous: c.Rendezvous,
		Logger:     c.Logger,
	}, nil
}

// State is the lifecycle state of a Carrier.
type State int32

// Carrier states. A Carrier is Closed once Close or Abort was called, or
// once its transient ended other than by an idle timeout: the peer closed
// or reset it, or the path failed.
const (
	Active State = iota
	Dormant
	Closed
)

func (s State) String() string {
	switch s {
	case Active:
		return "active"
	case Dormant:
		return "dormant"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

type kind uint8

const (
	kindFull kind = iota
	kindSource
	kindSink
)

// Carrier sends and receives Messages to one remote endpoint. It is safe
// for concurrent use.
type Carrier struct {
	assoc     *association.Association
	cfg       Config
	log       *slog.Logger
	initiator bool // can re-establish when dormant
	kind      kind
	class     psi.TrafficClass

	ctx    context.Context // cancelled on Close
	cancel context.CancelFunc

	mu          sync.Mutex
	t           psi.Transient // nil while dormant
	state       State
	revived     chan struct{}            // closed and replaced when t or state changes
	selfRetired bool                     // the Carrier itself ended the last transient (idle timeout)
	ended       error                    // why the transient ended, not by this side's choice
	sendErr     error                    // the transient cannot send any more
	lost        error                    // the first message accepted but not delivered
	left        *forksLeft               // forks kept from a transient the peer closed
	wrote       psi.Transient            // the transient the last message was handed to
	activate    sync.Mutex               // serialises re-establishment
	lastUse     atomic.Int64             // unix nanos of last traffic
	early       atomic.Pointer[earlyWin] // t won its race by starting 0-RTT (early.go)

	wlock  chan struct{} // held (full) while writing to the transient
	queue  *sendQueue
	nextID atomic.Uint64

	rmu sync.Mutex // serialises reads
	// discarded is set once Close read and dropped inbound data itself:
	// Ready then fails with post.ErrClosed.
	discarded atomic.Bool
	in        inbound
	recv      *claim      // the Listener's receive budget; nil on an initiated Carrier
	evicted   atomic.Bool // the receive budget ended the Carrier

	closing  atomic.Bool
	aborted  chan struct{} // closed by Abort
	abortOne sync.Once
	closed   chan struct{} // closed when Close or Abort has finished
	closeErr error         // what that first call found; set before closed closes
	wg       sync.WaitGroup
	ownAssoc bool        // the Association was made for this Carrier
	writer   atomic.Bool // a MessageWriter holds the transient

	ev        *events // nil without Config.OnEvent
	cnt       counters
	fam       *family // numbers the forks of the root
	forkNo    atomic.Uint64
	firstDone atomic.Bool // the first message was stamped
	lastStats atomic.Pointer[Stats]
	sender    atomic.Pointer[senderInfo]

	beforeWriteLock func() // tests: runs after a write chose its transient
	beforeFork      func() // tests: runs after a fork chose its transient
}

// Initiate makes a Carrier to remote, racing the allowed stacks over every
// candidate path, and returns once one transient is established.
func Initiate(ctx context.Context, remote post.Remote, cfg *Config) (*Carrier, error) {
	return initiate(ctx, remote, cfg, kindFull)
}

func initiate(ctx context.Context, remote post.Remote, cfg *Config, k kind) (*Carrier, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	a := cfg.Association
	if a == nil {
		acfg, err := cfg.associationConfig(remote)
		if err != nil {
			return nil, err
		}
		if a, err = association.New(acfg); err != nil {
			return nil, err
		}
	}
	if cfg.Lazy {
		c := newCarrier(a, nil, *cfg, true, k)
		c.ownAssoc = cfg.Association == nil
		return c, nil
	}
	t, err := a.Establish(ctx)
	if err != nil {
		return nil, err
	}
	c := newCarrier(a, t, *cfg, true, k)
	c.ownAssoc = cfg.Association == nil
	return c, nil
}

// NewDormant makes a Carrier on an Association without establishing a
// transient; the first Send does. A nil a means cfg.Association; without
// either the Carrier has no Remote: Send queues as ever, and each message
// fails with an error wrapping post.ErrUnknownHost, reported to its
// OnEvent (EventError) and by Flush and Close.
func NewDormant(a *association.Association, cfg *Config) *Carrier {
	if cfg == nil {
		cfg = &Config{}
	}
	if a == nil {
		a = cfg.Association
	}
	own := a == nil
	if own {
		// One without a Remote, so that sends fail rather than the
		// sender goroutine panicking on a nil Association.
		acfg, _ := cfg.associationConfig(post.Remote{})
		if a, _ = association.New(acfg); a == nil { // an invalid policy
			a, _ = association.New(association.Config{})
		}
	}
	c := newCarrier(a, nil, *cfg, true, kindFull)
	c.ownAssoc = own
	return c
}

func newCarrier(a *association.Association, t psi.Transient, cfg Config, initiator bool, k kind) *Carrier {
	c := &Carrier{
		assoc:     a,
		cfg:       cfg,
		initiator: initiator,
		kind:      k,
		t:         t,
		revived:   make(chan struct{}),
		aborted:   make(chan struct{}),
		closed:    make(chan struct{}),
		wlock:     make(chan struct{}, 1),
	}
	c.log = cfg.logger().With("carrier", fmt.Sprintf("%p", c))
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.queue = newSendQueue(cfg.sendBuffer())
	if t == nil {
		c.state = Dormant
	}
	c.fam = &family{}
	c.startEvents(t)
	c.touch()
	c.wg.Add(1)
	go c.sendLoop()
	if cfg.IdleTimeout > 0 {
		c.wg.Add(1)
		go c.idleLoop()
	}
	return c
}

func (c *Carrier) touch() { c.lastUse.Store(time.Now().UnixNano()) }

// Association returns the Carrier's Association.
func (c *Carrier) Association() *association.Association { return c.assoc }

// State returns whether the Carrier is active, dormant or closed.
func (c *Carrier) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Stack returns the name of the stack backing the Carrier, or "" when
// dormant or closed (Stats keeps the last stack's name).
func (c *Carrier) Stack() string {
	if t := c.transient(); t != nil {
		return t.Stack()
	}
	return ""
}

// Class returns the Carrier's traffic class: Wine (reliable, older data
// first) or Milk (newest data wins; older data may be dropped). Root
// Carriers are always Wine; a Carrier forked with ForkClass(ctx, psi.Milk)
// is Milk. Only a stack with psi.MilkClones (FSP) acts on it: QUIC
// records the class and delivers everything, as for Wine, and TCP
// refuses the fork (see ForkClass).
func (c *Carrier) Class() psi.TrafficClass {
	if t, ok := c.transient().(interface{ Class() psi.TrafficClass }); ok {
		return t.Class()
	}
	return c.class
}

// Features returns the features of the backing stack.
func (c *Carrier) Features() psi.Features {
	if t := c.transient(); t != nil {
		return t.Features()
	}
	return 0
}

// Path returns the path in use; the zero Path when dormant.
func (c *Carrier) Path() post.Path {
	if t := c.transient(); t != nil {
		return t.Path()
	}
	return post.Path{}
}

// Paths returns every path the backing stack knows.
func (c *Carrier) Paths() []post.Path {
	if t := c.transient(); t != nil {
		return t.Paths()
	}
	return nil
}

// Transient returns the backing transient, or nil when dormant. It is for
// stack-specific inspection; do not read or write through it.
func (c *Carrier) Transient() psi.Transient { return c.transient() }

func (c *Carrier) transient() psi.Transient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// active returns the transient, establishing a new one if the Carrier is
// dormant and was initiated locally.
func (c *Carrier) active(ctx context.Context) (psi.Transient, error) {
	return c.activeFor(ctx, nil, "send")
}

// activeOp is active for op, which names the call in errors.
func (c *Carrier) activeOp(ctx context.Context, op string) (psi.Transient, error) {
	return c.activeFor(ctx, nil, op)
}

// activeFor is active for op, sending m, which may travel as 0-RTT data.
func (c *Carrier) activeFor(ctx context.Context, m *post.Message, op string) (psi.Transient, error) {
	t, err := c.sendable(op)
	switch {
	case err != nil:
		return nil, err
	case t != nil:
		return t, nil
	case !c.initiator:
		return nil, errCannotRevive
	}
	c.activate.Lock()
	defer c.activate.Unlock()
	if t, err = c.sendable(op); t != nil || err != nil {
		return t, err
	}
	c.log.Debug("reviving dormant carrier")
	t, cand, err := c.assoc.Race(ctx, association.EstablishOptions{Allow0RTT: m != nil && m.Idempotent})
	if err != nil {
		if settled(err) {
			c.endWith(err)
		}
		return nil, err
	}
	c.mu.Lock()
	if c.state == Closed {
		c.mu.Unlock()
		psi.Abort(t, post.ErrClosed)
		return nil, post.ErrClosed
	}
	c.t, c.state, c.selfRetired = t, Active, false
	c.early.Store(newEarlyWin(t, cand))
	close(c.revived)
	c.revived = make(chan struct{})
	c.mu.Unlock()
	c.watch(t)
	c.touch()
	return t, nil
}

// errCannotRevive is what a dormant Carrier that did not initiate (one
// from Accept, or a fork) answers a send: only a Carrier from Initiate
// establishes a transient again.
var errCannotRevive = post.Errorf(post.ErrDormant, "the transient idled out and this end cannot re-establish it")

// settled reports whether a failure to establish would recur on every
// try: the peer refused the credentials, or the settings are unusable.
// Reviving again would only race again for the same answer.
func settled(err error) bool {
	return errors.Is(err, post.ErrAuthentication) || errors.Is(err, post.ErrInvalid) ||
		errors.Is(err, post.ErrPolicyConflict)
}

// endWith closes a dormant Carrier that cannot be revived: later Sends
// and Receives fail with err at once.
func (c *Carrier) endWith(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == Closed || c.t != nil {
		return
	}
	c.state, c.ended = Closed, err
	c.signal()
	c.log.Debug("carrier ended: it cannot be established", "err", err)
}

// Used0RTT reports whether the server accepted 0-RTT data on the
// Carrier's transient, so that its first message was sent (initiator) or
// received (listener) as 0-RTT data unless it was written after the
// handshake ended (psi.ZeroRTTReporter), waiting, at most until ctx
// ends, for the handshake to settle it. It is false for a dormant
// Carrier and for stacks without 0-RTT.
func (c *Carrier) Used0RTT(ctx context.Context) (bool, error) {
	z, ok := c.transient().(psi.ZeroRTTReporter)
	if !ok {
		return false, nil
	}
	select {
	case <-z.HandshakeComplete():
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return z.Used0RTT(), nil
}

// sendable returns the transient for op (send, fork, accept fork): nil
// with a nil error while dormant, and an error once the Carrier or its
// transient has ended: for a send one wrapping post.ErrPeerClosed when
// the peer closed or reset the transient, for a fork or accept fork one
// wrapping post.ErrClosed.
func (c *Carrier) sendable(op string) (psi.Transient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.sendErr != nil && op == "send":
		return nil, c.sendErr
	case c.state == Closed && c.ended != nil && op == "send":
		return nil, endedError(op, c.ended)
	case c.state == Closed && c.ended != nil:
		if errors.Is(c.ended, post.ErrClosed) {
			return nil, c.ended
		}
		return nil, fmt.Errorf("%w: cannot %s: %w", post.ErrClosed, op, c.ended)
	case c.state == Closed:
		return nil, post.ErrClosed
	}
	return c.t, nil
}

// retire drops t if it still backs the Carrier and closes it, making the
// Carrier dormant: an idle timeout, the Carrier's own choice, so the
// initiating side may revive it.
func (c *Carrier) retire(t psi.Transient, why error) {
	c.mu.Lock()
	if c.t != t || t == nil {
		c.mu.Unlock()
		return
	}
	c.t, c.selfRetired = nil, true
	if c.state == Active {
		c.state = Dormant
	}
	c.mu.Unlock()
	c.assoc.ObservePath(t.Path())
	c.keepStats(t)
	c.log.Debug("carrier dormant", "reason", why)
	t.Close()
}

func (c *Carrier) idleLoop() {
	defer c.wg.Done()
	d := c.cfg.IdleTimeout
	tick := time.NewTicker(max(d/4, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		idle := time.Since(time.Unix(0, c.lastUse.Load()))
		if idle < d || c.queue.busy() {
			continue
		}
		if t := c.transient(); t != nil && c.lockWrite(c.ctx) {
			// A message may have come while the lock was awaited.
			if time.Since(time.Unix(0, c.lastUse.Load())) >= d && !c.queue.busy() {
				c.retire(t, errors.New("idle timeout"))
			}
			c.unlockWrite()
		}
	}
}

// Fork makes a new Carrier to the same peer; the peer receives it from
// AcceptFork. On FSP it is a clone made in zero round trips, on QUIC a new
// stream, on TCP a new connection in the same Association. On FSP a Fork
// of a forked Carrier waits, until ctx ends, for the peer to call
// AcceptFork on that Carrier (fork credit; a root may fork four first);
// QUIC and TCP make it at once and hold it unaccepted.
func (c *Carrier) Fork(ctx context.Context) (*Carrier, error) {
	return c.ForkClass(ctx, c.cfg.Class)
}

// ForkClass is Fork with an explicit traffic class. Milk needs
// Policy.AllowMilk (else post.ErrPolicyConflict); FSP makes a milk clone,
// QUIC a stream that delivers everything, and TCP refuses it with an
// error wrapping post.ErrNotSupported. A class other than Wine and Milk
// is refused with an error wrapping post.ErrInvalid.
func (c *Carrier) ForkClass(ctx context.Context, class psi.TrafficClass) (*Carrier, error) {
	if class != psi.Wine && class != psi.Milk {
		return nil, post.Errorf(post.ErrInvalid, "traffic class %d", class)
	}
	if c.kind != kindFull {
		return nil, post.Errorf(post.ErrNotSupported, "sources and sinks cannot be forked")
	}
	if err := c.forkAllowed(); err != nil {
		return nil, err
	}
	if class == psi.Milk && !c.assoc.Policy().AllowMilk {
		return nil, post.Errorf(post.ErrPolicyConflict, "milk-like traffic needs Policy.AllowMilk")
	}
	if class == psi.Milk && c.assoc.Policy().Disabled()&psi.MilkClones != 0 {
		return nil, post.Errorf(post.ErrPolicyConflict, "the policy prohibits milk clones")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// No bound here on Forks in flight: psi/tcp bounds its fork
	// handshakes itself, and one shared by a Carrier's family let Forks
	// waiting for the peer's FSP fork credit hold up every other Fork.
	nt, t, err := c.forkActive(ctx, class)
	if err != nil {
		if t == nil {
			return nil, err
		}
		return nil, opError("fork", t, err)
	}
	f := newCarrier(c.assoc, nt, c.cfg, false, kindFull)
	f.class = class
	c.adopt(f)
	f.budgetLike(c)
	return f, nil
}

// forkActive forks the active transient. The idle timeout may retire the
// transient it chose before the fork is made: then it chooses again, and
// the fork goes on the revived transient instead of failing on the
// closed one.
func (c *Carrier) forkActive(ctx context.Context, class psi.TrafficClass) (psi.Transient, psi.Transient, error) {
	for {
		t, err := c.activeOp(ctx, "fork")
		if err != nil {
			return nil, nil, err
		}
		if h := c.beforeFork; h != nil {
			h()
		}
		nt, err := t.Fork(ctx, class)
		if err == nil || c.transient() == t || ctx.Err() != nil {
			return nt, t, err
		}
	}
}

// forkAllowed refuses forking when the policy prohibits the fork feature.
func (c *Carrier) forkAllowed() error {
	if c.assoc.Policy().Disabled()&psi.Fork != 0 {
		return post.Errorf(post.ErrPolicyConflict, "the policy prohibits forking")
	}
	return nil
}

// AcceptFork returns the next Carrier the peer forked from this one. It
// fails with an error wrapping post.ErrPolicyConflict when the policy
// prohibits forking, and with one wrapping post.ErrClosed once the peer
// closed this Carrier in order and no fork is queued, whether or not this
// Carrier was read (TCP outside Linux: only once it was read). Forks
// queued before the close are returned first, also after Receive
// returned io.EOF.
func (c *Carrier) AcceptFork(ctx context.Context) (*Carrier, error) {
	if err := c.forkAllowed(); err != nil {
		return nil, err
	}
	t, err := c.activeOp(ctx, "accept fork")
	if err == nil {
		var nt psi.Transient
		if nt, err = t.AcceptFork(ctx); err != nil {
			err = opError("accept fork", t, err)
		}
		t = nt
	}
	if err != nil {
		// The peer's close ended the Carrier: the forks it made before
		// are kept for AcceptFork (forkleft.go).
		if t = c.leftFork(ctx); t == nil {
			return nil, err
		}
	}
	f := newCarrier(c.assoc, t, c.cfg, false, kindFull)
	c.adopt(f)
	f.budgetLike(c)
	return f, nil
}

// Listener accepts Carriers from remote peers on every allowed stack.
type Listener struct {
	cfg    Config
	lns    []psi.Listener
	names  []string
	ch     chan *Carrier
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	once   sync.Once
	wg     sync.WaitGroup
	log    *slog.Logger

	budget     *recvBudget     // Config.ReceiveBudget; nil for none
	accepted   []atomic.Uint64 // per stack, as names
	acceptErrs atomic.Uint64
	since      time.Time
}

// Listen listens on local with each stack the policy allows. Stacks share
// the port number: TCP and UDP stacks bind the same number, and a second
// UDP stack shares the first one's socket where the stacks support it
// (psi.PacketSharer and psi.PacketListener: FSP and QUIC do). With port
// 0, Listen picks a number free on every network (a UDP stack that
// cannot share the socket then listens on a free port of its own,
// reported by Addrs and Remote); a port number that is taken fails
// Listen with an error wrapping post.ErrInvalid. Listen binds local.Addr: a Local with Interface set is refused
// with an error wrapping post.ErrNotSupported.
func Listen(ctx context.Context, local post.Local, cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if local.Interface != "" {
		return nil, post.Errorf(post.ErrNotSupported, "listen: Local.Interface %q: a listener binds Local.Addr only; give an address of the interface", local.Interface)
	}
	acfg, err := cfg.associationConfig(post.Remote{})
	if err != nil {
		return nil, err
	}
	acfg.Local = local
	a, err := association.New(acfg)
	if err != nil {
		return nil, err
	}
	stacks, err := a.ListenStacks()
	if err != nil {
		return nil, err
	}
	l := &Listener{
		cfg: *cfg,
		ch:  make(chan *Carrier, 16),
		log: cfg.logger(),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.cfg.Local = local
	l.budget = newRecvBudget(&l.cfg)
	addr := local.Addr
	if !addr.IsValid() {
		addr = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	// With port 0, a later stack may find the first one's port number
	// taken on its network: start again on a new port rather than split.
	for attempt := 1; ; attempt++ {
		if retry, err := l.listenAll(ctx, a, acfg, stacks, addr, attempt < 8); err != nil {
			return nil, err
		} else if !retry {
			break
		}
	}
	l.accepted, l.since = make([]atomic.Uint64, len(l.lns)), time.Now()
	for i, ln := range l.lns {
		l.wg.Add(1)
		go l.acceptLoop(ln, i, l.names[i], acfg)
	}
	return l, nil
}

// listenAll listens with each stack, as Listen describes. With retry set,
// it reports true, listening on nothing, when a stack could not take the
// port number an earlier one picked for a port 0 request.
func (l *Listener) listenAll(ctx context.Context, a *association.Association, acfg association.Config, stacks []psi.Stack, addr netip.AddrPort, retry bool) (bool, error) {
	used := map[string]bool{}
	var spare net.PacketConn // a UDP socket's foreign datagrams, to share
	for _, s := range stacks {
		tcfg := a.TransientConfig(netip.AddrPort{})
		// Accept 0-RTT unless the policy prohibits it; clients only send
		// idempotent messages that way.
		tcfg.Allow0RTT = acfg.Policy.Disabled()&psi.ZeroRTT == 0
		network := psi.StackNetwork(s)
		var ln psi.Listener
		var err error
		try := addr
		if addr.Port() == 0 && len(l.lns) > 0 {
			try = netip.AddrPortFrom(addr.Addr(), l.lns[0].Addr().Port())
		}
		switch pl, ok := s.(psi.PacketListener); {
		case network == "udp" && used["udp"] && spare != nil && ok:
			// Share the first UDP stack's socket and port.
			pc := spare
			spare = nil
			if ln, err = pl.ListenPacket(ctx, pc, tcfg); err != nil {
				pc.Close()
			}
		case network == "udp" && !used["udp"]:
			if sh, ok := s.(psi.PacketSharer); ok {
				ln, spare, err = sh.ListenShared(ctx, try, tcfg)
			} else {
				ln, err = s.Listen(ctx, try, tcfg)
			}
		default:
			if used[network] && addr.Port() == 0 {
				try = netip.AddrPortFrom(addr.Addr(), 0)
			}
			ln, err = s.Listen(ctx, try, tcfg)
		}
		if err != nil && try != addr && retry && addr.Port() == 0 {
			if spare != nil {
				spare.Close()
			}
			for _, ln := range l.lns {
				ln.Close()
			}
			l.lns, l.names = nil, nil
			return true, nil
		}
		if err != nil && try != addr {
			ln, err = s.Listen(ctx, addr, tcfg)
		}
		if err != nil {
			if spare != nil {
				spare.Close()
			}
			l.Close()
			return false, &post.OpError{Op: "listen", Stack: s.Name(), Path: try.String(), Err: socketInvalid(err)}
		}
		used[network] = true
		l.lns = append(l.lns, ln)
		l.names = append(l.names, s.Name())
	}
	if spare != nil {
		spare.Close() // no other UDP stack wants the shared socket
	}
	return false, nil
}

// socketInvalid wraps the errors of a Local that cannot be listened on
// (a port taken, an address not local, a port the process may not bind)
// in post.ErrInvalid.
func socketInvalid(err error) error { return sockerr.Bind(err) }

func (l *Listener) acceptLoop(ln psi.Listener, idx int, name string, acfg association.Config) {
	defer l.wg.Done()
	var delay time.Duration // backoff on repeated accept errors
	for {
		t, err := ln.Accept(l.ctx)
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, post.ErrClosed) {
				return
			}
			l.acceptErrs.Add(1)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Debug("accept failed", "stack", name, "err", err, "retry", delay)
			select {
			case <-time.After(delay):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		a := association.FromTransient(t, acfg)
		c := newCarrier(a, t, l.cfg, false, kindFull)
		if l.budget != nil {
			c.recv = l.budget.claim(t.Path().Remote.Addr(), c.evictGather, c.readBacklog)
		}
		l.accepted[idx].Add(1)
		select {
		case l.ch <- c:
		case <-l.ctx.Done():
			c.Abort() // never accepted: nothing to finish
			return
		}
	}
}

// Accept returns the next Carrier a peer initiated.
func (l *Listener) Accept(ctx context.Context) (*Carrier, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.ctx.Done():
		return nil, post.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr returns the address of the first stack's listener.
func (l *Listener) Addr() netip.AddrPort {
	if len(l.lns) == 0 {
		return netip.AddrPort{}
	}
	return l.lns[0].Addr()
}

// Addrs returns each stack's listening address by stack name.
func (l *Listener) Addrs() map[string]netip.AddrPort {
	m := make(map[string]netip.AddrPort, len(l.lns))
	for i, ln := range l.lns {
		m[l.names[i]] = ln.Addr()
	}
	return m
}

// Remote returns a Remote that reaches this Listener over every stack,
// using host for the address (for example "127.0.0.1" or "localhost").
func (l *Listener) Remote(host string) post.Remote {
	port := l.Addr().Port()
	r := post.Remote{Name: fmt.Sprintf("%s:%d", host, port), Ports: map[string]uint16{}}
	if ip, err := netip.ParseAddr(host); err == nil {
		r.Name = netip.AddrPortFrom(ip, port).String()
	}
	for name, a := range l.Addrs() {
		if a.Port() != port {
			r.Ports[name] = a.Port()
		}
	}
	return r
}

// Close stops listening. Carriers already accepted stay open; those not
// yet accepted are aborted. The UDP stacks' accepted Carriers run over
// the listener's socket, so its port stays bound until they are closed,
// and on FSP up to a second more (time-wait): a Listen on the same port
// number until then fails with an error wrapping post.ErrInvalid. TCP's
// port is free at once.
func (l *Listener) Close() error {
	var errs []error
	l.once.Do(func() {
		l.cancel()
		for _, ln := range l.lns {
			if err := ln.Close(); err != nil && !errors.Is(err, post.ErrClosed) {
				errs = append(errs, err)
			}
		}
		l.wg.Wait()
		for {
			select {
			case c := <-l.ch:
				c.Abort() // never accepted: nothing to finish
				continue
			default:
			}
			break
		}
	})
	return errors.Join(errs...)
}
