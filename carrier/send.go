package carrier

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// SendMsg queues m for sending and returns once it is queued. Messages are
// sent in order of niceness, then lifetime (earliest deadline first), then
// submission; a message waits for its antecedents; a message whose
// lifetime passes before it is sent is dropped and reported with
// EventExpired. SendMsg blocks while Config.SendBuffer bytes are queued,
// and fails with an error wrapping post.ErrBackpressure if ctx ends first.
// The Carrier keeps m.Content until it is sent: do not modify it.
func (c *Carrier) SendMsg(ctx context.Context, m *post.Message) error {
	if c.kind == kindSink {
		return post.Errorf(post.ErrNotSupported, "a sink cannot send")
	}
	if int64(len(m.Content)) > c.cfg.maxMessage() {
		return post.Errorf(post.ErrMessageTooLarge, "%d bytes, limit %d", len(m.Content), c.cfg.maxMessage())
	}
	if c.closing.Load() {
		return post.ErrClosed
	}
	if m.ID == 0 {
		m.ID = post.MessageID(c.nextID.Add(1))
	}
	om := &outMsg{m: m, size: int64(len(m.Content)), queued: time.Now()}
	if d, ok := m.Deadline(om.queued); ok {
		om.deadline = d
	}
	c.touch()
	return c.queue.push(ctx, om)
}

// Send queues content as a Message with default properties.
func (c *Carrier) Send(ctx context.Context, content []byte) error {
	return c.SendMsg(ctx, &post.Message{Content: content})
}

// Flush waits until every queued message has been handed to the stack.
func (c *Carrier) Flush(ctx context.Context) error { return c.queue.drain(ctx) }

func (c *Carrier) sendLoop() {
	defer c.wg.Done()
	var held psi.Transient // holds messages written with More
	for {
		om, antFailed, ok := c.queue.tryNext()
		if !ok && held != nil {
			// Nothing more at once: send what the stack holds back.
			if f, isF := held.(psi.Flusher); isF {
				c.wmu.Lock()
				if err := f.Flush(c.ctx); err != nil {
					c.retire(held, err)
				}
				c.wmu.Unlock()
			}
			held = nil
		}
		if !ok {
			om, antFailed, ok = c.queue.next(c.ctx)
		}
		if !ok {
			return
		}
		var err error
		switch {
		case antFailed:
			err = post.Errorf(post.ErrExpired, "an antecedent of message %d was not sent", om.m.ID)
		case !om.deadline.IsZero() && time.Now().After(om.deadline):
			err = post.ErrExpired
		default:
			var t psi.Transient
			t, err = c.write(om)
			if err == nil && om.more {
				held = t
			}
		}
		c.queue.done(om, err == nil)
		switch {
		case err == nil:
			om.evMu.Lock()
			emit(om.m, post.EventSent, nil)
			om.sentEmitted = true
			if om.ackPending {
				emit(om.m, post.EventAcked, nil)
			}
			om.evMu.Unlock()
		case errors.Is(err, post.ErrExpired):
			emit(om.m, post.EventExpired, err)
		default:
			emit(om.m, post.EventError, err)
		}
	}
}

func emit(m *post.Message, k post.EventKind, err error) {
	if m.OnEvent != nil {
		m.OnEvent(post.SendEvent{Kind: k, ID: m.ID, Time: time.Now(), Err: err})
	}
}

func (c *Carrier) write(om *outMsg) (psi.Transient, error) {
	ctx := c.ctx
	if !om.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, om.deadline)
		defer cancel()
	}
	t, err := c.activeFor(ctx, om.m)
	if err != nil {
		if !om.deadline.IsZero() && errors.Is(err, context.DeadlineExceeded) {
			return nil, post.ErrExpired
		}
		return nil, err
	}
	opts := &psi.WriteOptions{Properties: &om.m.Properties, More: om.more && !om.m.Immediate}
	if om.m.OnEvent != nil {
		// The acknowledgement may race the sent event; report it after.
		m := om.m
		opts.Acked = func() {
			om.evMu.Lock()
			defer om.evMu.Unlock()
			if om.sentEmitted {
				emit(m, post.EventAcked, nil)
			} else {
				om.ackPending = true
			}
		}
	}
	c.wmu.Lock()
	err = t.WriteMessage(ctx, om.m.Content, true, opts)
	c.wmu.Unlock()
	c.touch()
	if err != nil {
		if !om.deadline.IsZero() && ctx.Err() != nil && c.ctx.Err() == nil {
			// The lifetime ran out while flow control held the message;
			// the stack may have sent part of it, so the transient's
			// framing is no longer trustworthy.
			c.retire(t, err)
			return nil, fmt.Errorf("%w: %v", post.ErrExpired, err)
		}
		c.retire(t, err)
		return nil, &post.OpError{Op: "send", Stack: t.Stack(), Path: t.Path().String(), Err: err}
	}
	return t, nil
}

// MessageWriter sends one Message in parts, for content too large to hold
// in memory. It holds the Carrier's transient until Close, so queued
// messages wait for it.
type MessageWriter struct {
	c     *Carrier
	t     psi.Transient
	props post.Properties
	ctx   context.Context
	n     int64
	done  bool
}

// NewMessageWriter starts a partial Message. Each Write sends a part;
// Close completes the Message. ctx bounds every part.
func (c *Carrier) NewMessageWriter(ctx context.Context, props post.Properties) (*MessageWriter, error) {
	if c.kind == kindSink {
		return nil, post.Errorf(post.ErrNotSupported, "a sink cannot send")
	}
	if err := c.queue.drain(ctx); err != nil {
		return nil, err
	}
	t, err := c.active(ctx)
	if err != nil {
		return nil, err
	}
	c.wmu.Lock()
	return &MessageWriter{c: c, t: t, props: props, ctx: ctx}, nil
}

// Write sends p as the next part of the message.
func (w *MessageWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, post.ErrClosed
	}
	if w.n+int64(len(p)) > w.c.cfg.maxMessage() {
		return 0, post.Errorf(post.ErrMessageTooLarge, "limit %d", w.c.cfg.maxMessage())
	}
	if err := w.t.WriteMessage(w.ctx, p, false, nil); err != nil {
		w.abort(err)
		return 0, err
	}
	w.n += int64(len(p))
	w.c.touch()
	return len(p), nil
}

func (w *MessageWriter) abort(err error) {
	w.done = true
	w.c.wmu.Unlock()
	w.c.retire(w.t, err)
}

// Close completes the message.
func (w *MessageWriter) Close() error {
	if w.done {
		return nil
	}
	err := w.t.WriteMessage(w.ctx, nil, true, &psi.WriteOptions{Properties: &w.props})
	if err != nil {
		w.abort(err)
		return err
	}
	w.done = true
	w.c.wmu.Unlock()
	return nil
}

// outMsg is a queued message.
type outMsg struct {
	m        *post.Message
	seq      uint64
	size     int64
	queued   time.Time
	deadline time.Time
	idx      int
	more     bool // another message was ready when this one was taken

	evMu        sync.Mutex // orders the sent and acknowledged events
	sentEmitted bool
	ackPending  bool
}

// sendQueue orders outbound messages and bounds their total size.
type sendQueue struct {
	mu       sync.Mutex
	h        msgHeap
	pending  map[post.MessageID]*outMsg   // queued, parked or in flight
	waiters  map[post.MessageID][]*outMsg // parked on an antecedent
	failed   map[post.MessageID]struct{}
	failedQ  []post.MessageID
	bytes    int64
	limit    int64
	seq      uint64
	inflight int
	closed   bool
	held     bool          // tests: keep next from taking messages
	wake     chan struct{} // to the single consumer
	changed  chan struct{} // broadcast to producers and drainers; lazy
}

const maxFailedIDs = 4096

func newSendQueue(limit int64) *sendQueue {
	return &sendQueue{
		pending: make(map[post.MessageID]*outMsg),
		waiters: make(map[post.MessageID][]*outMsg),
		failed:  make(map[post.MessageID]struct{}),
		limit:   limit,
		wake:    make(chan struct{}, 1),
	}
}

func (q *sendQueue) notify() {
	if q.changed != nil {
		close(q.changed)
		q.changed = nil
	}
}

func (q *sendQueue) waitCh() <-chan struct{} {
	if q.changed == nil {
		q.changed = make(chan struct{})
	}
	return q.changed
}

func (q *sendQueue) busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending) > 0
}

func (q *sendQueue) push(ctx context.Context, om *outMsg) error {
	q.mu.Lock()
	for {
		if q.closed {
			q.mu.Unlock()
			return post.ErrClosed
		}
		// One message larger than the buffer may go alone.
		if q.bytes == 0 || q.bytes+om.size <= q.limit {
			break
		}
		ch := q.waitCh()
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: send buffer full: %w", post.ErrBackpressure, ctx.Err())
		}
		q.mu.Lock()
	}
	q.seq++
	om.seq = q.seq
	q.bytes += om.size
	q.pending[om.m.ID] = om
	heap.Push(&q.h, om)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// next blocks for the next eligible message. antFailed reports that one of
// its antecedents failed. ok is false once the queue is closed.
func (q *sendQueue) next(ctx context.Context) (om *outMsg, antFailed, ok bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, false, false
		}
		om, antFailed, ok = q.take()
		q.mu.Unlock()
		if ok {
			return om, antFailed, true
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil, false, false
		}
	}
}

// tryNext is next without waiting: ok is false when nothing is ready.
func (q *sendQueue) tryNext() (om *outMsg, antFailed, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, false, false
	}
	return q.take()
}

// take pops the next eligible message, parking those whose antecedents
// are still pending. q.mu is held.
func (q *sendQueue) take() (om *outMsg, antFailed, ok bool) {
pop:
	for q.h.Len() > 0 && !q.held {
		om = heap.Pop(&q.h).(*outMsg)
		antFailed = false
		for _, a := range om.m.Antecedents {
			if a == om.m.ID {
				continue
			}
			if _, queued := q.pending[a]; queued {
				q.waiters[a] = append(q.waiters[a], om)
				continue pop
			}
			if _, bad := q.failed[a]; bad {
				antFailed = true
			}
		}
		q.inflight++
		om.more = q.h.Len() > 0
		return om, antFailed, true
	}
	return nil, false, false
}

// done resolves a message taken with next.
func (q *sendQueue) done(om *outMsg, ok bool) {
	q.mu.Lock()
	q.inflight--
	q.resolve(om, ok)
	q.notify()
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *sendQueue) resolve(om *outMsg, ok bool) {
	id := om.m.ID
	delete(q.pending, id)
	q.bytes -= om.size
	if !ok {
		q.failed[id] = struct{}{}
		q.failedQ = append(q.failedQ, id)
		if len(q.failedQ) > maxFailedIDs {
			delete(q.failed, q.failedQ[0])
			q.failedQ = q.failedQ[1:]
		}
	}
	for _, w := range q.waiters[id] {
		heap.Push(&q.h, w)
	}
	delete(q.waiters, id)
}

// drain waits until nothing is queued or in flight.
func (q *sendQueue) drain(ctx context.Context) error {
	q.mu.Lock()
	for len(q.pending) > 0 && !q.closed {
		ch := q.waitCh()
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	q.mu.Unlock()
	return nil
}

// close fails every message not yet taken.
func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	var left []*outMsg
	for _, om := range q.pending {
		left = append(left, om)
	}
	q.h = nil
	clear(q.pending)
	clear(q.waiters)
	q.bytes = 0
	q.notify()
	q.mu.Unlock()
	for _, om := range left {
		emit(om.m, post.EventError, post.Errorf(post.ErrClosed, "carrier closed before message %d was sent", om.m.ID))
	}
}

// msgHeap orders by niceness, then deadline (none last), then sequence.
type msgHeap []*outMsg

func (h msgHeap) Len() int { return len(h) }
func (h msgHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.m.Niceness != b.m.Niceness {
		return a.m.Niceness < b.m.Niceness
	}
	ad, bd := !a.deadline.IsZero(), !b.deadline.IsZero()
	if ad != bd {
		return ad
	}
	if ad && !a.deadline.Equal(b.deadline) {
		return a.deadline.Before(b.deadline)
	}
	return a.seq < b.seq
}
func (h msgHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *msgHeap) Push(x any) {
	om := x.(*outMsg)
	om.idx = len(*h)
	*h = append(*h, om)
}
func (h *msgHeap) Pop() any {
	old := *h
	n := len(old)
	om := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return om
}

// hold stops or restarts the sender taking messages (for tests).
func (q *sendQueue) hold(on bool) {
	q.mu.Lock()
	q.held = on
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
