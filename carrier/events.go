package carrier

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// EventKind is the kind of a connection-level Event.
type EventKind uint8

// Connection-level events, named as in RFC 9622 §8.3 (PathValidated is
// not in the RFC: a new path passed validation, for multihoming).
const (
	PathChange EventKind = iota + 1
	PathValidated
	SoftError
	ConnectionError
	ClosedEvent
)

func (k EventKind) String() string {
	switch k {
	case PathChange:
		return "PathChange"
	case PathValidated:
		return "PathValidated"
	case SoftError:
		return "SoftError"
	case ConnectionError:
		return "ConnectionError"
	case ClosedEvent:
		return "Closed"
	}
	return "unknown"
}

// Event is a connection-level event of a Carrier, delivered to
// Config.OnEvent. Old and New are set for PathChange (New alone for
// PathValidated); Err for SoftError and ConnectionError. Fork is the
// number of the Carrier among its root's forks (0: the root), as in
// Stats.Fork: forks share their root's Config.OnEvent, and each ends
// with a Closed of its own.
type Event struct {
	Kind     EventKind
	Stack    string
	Old, New post.Path
	Err      error
	Time     time.Time
	Fork     uint64
}

// eventQueueLen bounds the events waiting for Config.OnEvent; when it is
// full, newer events are dropped (Stats.EventsDropped counts them), so
// the stack never waits for the application.
const eventQueueLen = 64

// events feeds Config.OnEvent from one goroutine per Carrier.
type events struct {
	mu      sync.Mutex
	ch      chan Event
	done    bool // Closed was queued and ch closed
	dropped atomic.Uint64
	last    atomic.Pointer[post.Path] // for stacks without psi.EventSource
}

// startEvents starts delivering events if Config.OnEvent is set, and
// watches t.
func (c *Carrier) startEvents(t psi.Transient) {
	if c.cfg.OnEvent != nil {
		c.ev = &events{ch: make(chan Event, eventQueueLen)}
		go func(ch <-chan Event, h func(Event)) {
			for ev := range ch {
				h(ev)
			}
		}(c.ev.ch, c.cfg.OnEvent)
	}
	c.watch(t)
}

// watch subscribes to t's events (psi.EventSource); for other stacks the
// Carrier notices a new remote address as messages arrive. A path change
// also refreshes what received messages say of their sender.
func (c *Carrier) watch(t psi.Transient) {
	if t == nil {
		return
	}
	es, ok := t.(psi.EventSource)
	if c.ev == nil {
		if ok {
			es.SetEventHandler(func(e psi.Event) {
				if e.Kind == psi.EventPathChange {
					c.sender.Store(nil)
				}
			})
		}
		return
	}
	p := t.Path()
	c.ev.last.Store(&p)
	if !ok {
		return
	}
	stack := t.Stack()
	es.SetEventHandler(func(e psi.Event) {
		k := PathChange
		switch e.Kind {
		case psi.EventPathValidated:
			k = PathValidated
		case psi.EventSoftError:
			k = SoftError
		default:
			c.sender.Store(nil)
		}
		c.post(Event{Kind: k, Stack: stack, Old: e.Old, New: e.New, Err: e.Err, Time: e.Time})
	})
}

// pollPath reports a PathChange when a stack without psi.EventSource
// (QUIC, whose connection follows a migrating client) now uses another
// remote address.
func (c *Carrier) pollPath(t psi.Transient) {
	if c.ev == nil || t == nil {
		return
	}
	if _, ok := t.(psi.EventSource); ok {
		return
	}
	old := c.ev.last.Load()
	p := t.Path()
	if old == nil || old.Remote == p.Remote && old.Local == p.Local {
		return
	}
	if c.ev.last.CompareAndSwap(old, &p) {
		c.post(Event{Kind: PathChange, Stack: t.Stack(), Old: *old, New: p, Time: time.Now()})
	}
}

// post queues ev for Config.OnEvent without blocking. Nothing follows
// Closed.
func (c *Carrier) post(ev Event) {
	if c.ev == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Fork = c.forkNo.Load()
	c.ev.mu.Lock()
	defer c.ev.mu.Unlock()
	if c.ev.done {
		return
	}
	select {
	case c.ev.ch <- ev:
	default:
		c.ev.dropped.Add(1)
	}
	if ev.Kind == ClosedEvent {
		c.ev.done = true
		close(c.ev.ch)
	}
}

// endEvents reports the end of the Carrier's transient: a ConnectionError
// unless the peer closed in order, then Closed.
func (c *Carrier) endEvents(t psi.Transient, why error) {
	if c.ev == nil {
		return
	}
	stack := ""
	if t != nil {
		stack = t.Stack()
	}
	if why != nil && !(errors.Is(why, io.EOF) && !errors.Is(why, io.ErrUnexpectedEOF)) {
		c.post(Event{Kind: ConnectionError, Stack: stack, Err: why})
	}
	c.post(Event{Kind: ClosedEvent, Stack: stack})
}
