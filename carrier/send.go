package carrier

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// SendMsg queues m for sending and returns once it is queued. Messages are
// sent in order of niceness, then lifetime (earliest deadline first), then
// submission; a message waits for its antecedents, which must be messages
// already submitted on this Carrier; a message whose lifetime passes
// before it is sent is dropped and reported with EventExpired. SendMsg
// blocks while Config.SendBuffer bytes are queued (each message counts
// its content and 256 bytes more), and fails with an error wrapping
// post.ErrBackpressure if ctx ends first; a ctx that has already ended
// queues nothing. After the peer closed, it fails with an error
// wrapping post.ErrPeerClosed. Content over Config.MaxMessageSize is
// refused with an error wrapping post.ErrMessageTooLarge (NewMessageWriter
// sends it in parts). An ID the caller sets must not be that of a message
// still queued or being sent (ErrInvalid). The Carrier keeps m.Content
// until it is sent: do not modify it.
func (c *Carrier) SendMsg(ctx context.Context, m *post.Message) error {
	if m == nil {
		return post.Errorf(post.ErrInvalid, "nil message")
	}
	if m.Lifetime < 0 {
		return post.Errorf(post.ErrInvalid, "negative lifetime %v", m.Lifetime)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.kind == kindSink {
		return post.Errorf(post.ErrNotSupported, "a sink cannot send")
	}
	if int64(len(m.Content)) > c.cfg.maxMessage() {
		return post.Errorf(post.ErrMessageTooLarge, "%d bytes, limit %d", len(m.Content), c.cfg.maxMessage())
	}
	if c.closing.Load() {
		return post.ErrClosed
	}
	if t, err := c.sendable("send"); err != nil {
		return err
	} else if t == nil && !c.initiator {
		return errCannotRevive
	}
	for _, a := range m.Antecedents {
		// A message may name itself (ignored); no message has ID 0.
		if (a != m.ID || a == 0) && !c.knownID(a) {
			return post.Errorf(post.ErrInvalid, "antecedent %d was not sent on this carrier", a)
		}
	}
	chosen := m.ID != 0
	if !chosen {
		m.ID = post.MessageID(c.nextID.Add(1))
	} else {
		c.queue.remember(m.ID)
	}
	size := int64(len(m.Content))
	om := &outMsg{m: m, size: size, cost: size + queuedOverhead, queued: time.Now(), chosen: chosen}
	if d, ok := m.Deadline(om.queued); ok {
		om.deadline = d
	}
	c.touch()
	return c.queue.push(ctx, om)
}

// knownID reports whether id names a message submitted on this Carrier:
// one numbered by it, or one of the last IDs the caller chose.
func (c *Carrier) knownID(id post.MessageID) bool {
	return id != 0 && (uint64(id) <= c.nextID.Load() || c.queue.knows(id))
}

// Send queues content as a Message with default properties.
func (c *Carrier) Send(ctx context.Context, content []byte) error {
	return c.SendMsg(ctx, &post.Message{Content: content})
}

// Flush waits until every queued message has been handed to the stack.
// It returns nil only if every message SendMsg accepted so far was
// handed to the stack or dropped for its lifetime (EventExpired), as
// Close counts them; otherwise an error says why the others were not
// (the transient's failure, or post.ErrClosed for messages the Carrier's
// Close or Abort dropped).
func (c *Carrier) Flush(ctx context.Context) error {
	if err := c.queue.drain(ctx); err != nil {
		return err
	}
	n := c.queue.undelivered()
	if n == 0 {
		return nil
	}
	c.mu.Lock()
	lost := c.lost
	c.mu.Unlock()
	if lost != nil {
		return fmt.Errorf("%d messages not sent: %w", n, lost)
	}
	return post.Errorf(post.ErrClosed, "%d messages not sent: the carrier was closed", n)
}

// lockWrite takes the right to write to the transient, unless ctx ends
// first.
func (c *Carrier) lockWrite(ctx context.Context) bool {
	select {
	case c.wlock <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Carrier) unlockWrite() { <-c.wlock }

// lockActive returns the transient to write m to with the write lock
// held, reviving a dormant Carrier as active does. The idle timeout
// retires a transient under the write lock, so a transient chosen before
// the lock was taken may have been closed meanwhile: then it chooses
// again, and the message goes on the revived transient instead of failing
// on the closed one.
func (c *Carrier) lockActive(ctx context.Context, m *post.Message) (psi.Transient, error) {
	for {
		t, err := c.activeFor(ctx, m, "send")
		if err != nil {
			return nil, err
		}
		if h := c.beforeWriteLock; h != nil {
			h()
		}
		if !c.lockWrite(ctx) {
			if err := ctx.Err(); err != nil && c.ctx.Err() == nil {
				return nil, err
			}
			return nil, post.ErrClosed
		}
		c.mu.Lock()
		same := c.t == t
		c.mu.Unlock()
		if same {
			return t, nil
		}
		c.unlockWrite()
	}
}

func (c *Carrier) sendLoop() {
	defer c.wg.Done()
	var held psi.Transient // holds messages written with More
	for {
		om, antFailed, ok := c.queue.tryNext()
		if !ok && held != nil {
			// Nothing more at once: send what the stack holds back.
			if f, isF := held.(psi.Flusher); isF && c.lockWrite(c.ctx) {
				if err := f.Flush(c.ctx); err != nil {
					c.sendFailed(held, err)
				}
				c.unlockWrite()
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
		if err != nil && !errors.Is(err, post.ErrExpired) {
			c.noteLost(err) // before done wakes a Flush that reports it
		}
		c.queue.done(om, err)
		switch {
		case err == nil:
			c.noteSent(om.size)
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
	t, err := c.writeOn(ctx, om, om.m)
	if errors.Is(err, errEarlyFailed) {
		// The transient won its race as a 0-RTT attempt and failed its
		// handshake: the message was not delivered (early.go). Race
		// again, without 0-RTT, and send it there.
		t, err = c.writeOn(ctx, om, nil)
	}
	return t, err
}

// errEarlyFailed is what writeOn returns when the message went to a
// 0-RTT attempt that then failed its handshake: it was not delivered.
var errEarlyFailed = post.Errorf(post.ErrRefused, "0-RTT attempt failed its handshake")

// writeOn writes om to the Carrier's transient, establishing one when
// dormant, as 0-RTT data if first allows it (activeFor).
func (c *Carrier) writeOn(ctx context.Context, om *outMsg, first *post.Message) (psi.Transient, error) {
	t, err := c.lockActive(ctx, first)
	if err != nil {
		if !om.deadline.IsZero() && errors.Is(err, context.DeadlineExceeded) {
			return nil, post.ErrExpired
		}
		return nil, err
	}
	props := &om.m.Properties
	if props.Unreliable && c.assoc.Policy().Disabled()&psi.Datagrams != 0 {
		// The policy prohibits datagrams: send it reliably.
		p := *props
		p.Unreliable = false
		props = &p
	}
	opts := &psi.WriteOptions{Properties: props, More: om.more && !om.m.Immediate}
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
	err = t.WriteMessage(ctx, om.m.Content, true, opts)
	if (err == nil || ctxend.Err(ctx) == nil) && c.settleEarly(ctx, t) {
		c.unlockWrite()
		return nil, errEarlyFailed
	}
	if err != nil && ctxend.Err(ctx) != nil && c.ctx.Err() == nil {
		// The lifetime ran out while flow control held the message;
		// the stack may have sent part of it, so abandon it.
		c.abandon(t, err)
		c.unlockWrite()
		return nil, fmt.Errorf("%w: %w", post.ErrExpired, opError("send", t, err))
	}
	c.unlockWrite()
	c.touch()
	if err != nil && c.ctx.Err() != nil {
		// Close or Abort cut the write short: say so, whatever the
		// stack made of its context's end.
		return nil, fmt.Errorf("%w: the carrier was closed during the write: %w", post.ErrClosed, opError("send", t, err))
	}
	if err != nil {
		return nil, c.sendFailed(t, err)
	}
	c.mu.Lock()
	c.wrote = t
	c.mu.Unlock()
	return t, nil
}

// abandon ends the message in progress on t after a write this side cut
// short, so that the peer never takes it as complete. A stack that cannot
// abort one message alone (framer.Line) aborts the transient, and that ends the
// Carrier: it is not dormant, as only an idle timeout makes it so. The
// caller holds the write lock.
func (c *Carrier) abandon(t psi.Transient, why error) {
	if err := psi.AbortMessage(c.ctx, t); err != nil {
		c.lose(t, localEnd{fmt.Errorf("a message was abandoned (%v) and the %s transient with it: %w", why, t.Stack(), err)})
	}
}

// localEnd is why this side ended its transient, as opposed to the peer.
type localEnd struct{ error }

func (e localEnd) Unwrap() error { return e.error }

// sendFailed records that writing to t failed with err, not by this
// side's choice: the transient sends no more (the peer closed or reset it,
// or the path failed), and later sends fail with the error. It returns
// the error to report for the message.
func (c *Carrier) sendFailed(t psi.Transient, err error) error {
	e := opError("send", t, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == t && c.sendErr == nil && !c.closing.Load() {
		c.sendErr = e
		if errors.Is(err, post.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, post.ErrReset) {
			c.sendErr = endedError("send", e)
		}
	}
	if c.sendErr != nil {
		return c.sendErr
	}
	return e
}

// noteLost records the first message that was accepted but not delivered;
// Close reports it.
func (c *Carrier) noteLost(err error) {
	c.mu.Lock()
	if c.lost == nil {
		c.lost = err
	}
	c.mu.Unlock()
}

// MessageWriter sends one Message in parts, for content too large to hold
// in memory at once. No limit applies to its total length: a receiver's
// Config.MaxMessageSize bounds only what it holds at once, so a receiver
// reading parts with Ready and ReadyOptions.Max takes a message of any
// length, while Receive (whole messages) fails with an error wrapping
// post.ErrMessageTooLarge once the message exceeds the receiver's limit.
//
// A message whose Write failed, or that was aborted, never reaches the
// reader as complete: its reader gets an error for it instead. The
// MessageWriter holds the Carrier's transient until Close or Abort, so
// queued messages wait for it. It is not safe for concurrent use.
type MessageWriter struct {
	c     *Carrier
	t     psi.Transient
	props post.Properties
	ctx   context.Context
	n     int64
	err   error // the first failure; the message was abandoned
	done  bool  // the transient was released
}

// NewMessageWriter starts a partial Message. Each Write sends a part;
// Close completes the Message and Abort abandons it. ctx bounds every
// part: when it ends, the message is abandoned. On QUIC and TCP, if it
// ends while a Write is held by the peer's flow control, the stream is
// cut inside a frame and the Carrier ends with the message (the peer
// gets post.ErrReset); FSP goes on with the next message.
func (c *Carrier) NewMessageWriter(ctx context.Context, props post.Properties) (*MessageWriter, error) {
	if c.kind == kindSink {
		return nil, post.Errorf(post.ErrNotSupported, "a sink cannot send")
	}
	if props.Lifetime < 0 {
		return nil, post.Errorf(post.ErrInvalid, "negative lifetime %v", props.Lifetime)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.closing.Load() {
		return nil, post.ErrClosed
	}
	if err := c.queue.drain(ctx); err != nil {
		return nil, err
	}
	t, err := c.lockActive(ctx, nil)
	if err != nil {
		return nil, err
	}
	c.writer.Store(true)
	return &MessageWriter{c: c, t: t, props: props, ctx: ctx}, nil
}

var (
	errWriterDone    = post.Errorf(post.ErrClosed, "message writer already closed")
	errWriterAborted = post.Errorf(post.ErrClosed, "message aborted with MessageWriter.Abort")
)

// Write sends p as the next part of the message. After an error the
// message is abandoned and Close returns the error.
func (w *MessageWriter) Write(p []byte) (int, error) {
	switch {
	case w.err != nil:
		return 0, w.err
	case w.done:
		return 0, errWriterDone
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := w.t.WriteMessage(w.ctx, p, false, nil); err != nil {
		w.fail(err)
		return 0, w.err
	}
	w.n += int64(len(p))
	w.c.touch()
	return len(p), nil
}

// fail abandons the message after err and releases the transient.
func (w *MessageWriter) fail(err error) {
	if ctxend.Err(w.ctx) != nil || err == errWriterAborted {
		w.err = opError("send", w.t, err)
		w.c.abandon(w.t, err)
	} else {
		w.err = w.c.sendFailed(w.t, err)
	}
	w.release()
}

func (w *MessageWriter) release() {
	if !w.done {
		w.done = true
		w.c.writer.Store(false)
		w.c.unlockWrite()
	}
}

// Close completes the message and returns nil once the stack holds all of
// it. If a Write failed or the message was aborted, Close returns that
// error: the reader never sees the message as complete. The end travels
// alone, so a reader of parts may get it as an empty last part (or with
// the last data, if that was still unread); WriteLast
// sends the last bytes with it instead.
func (w *MessageWriter) Close() error { return w.finish(nil) }

// WriteLast sends p as the last part of the message and completes it, as
// Close does.
func (w *MessageWriter) WriteLast(p []byte) (int, error) {
	if err := w.finish(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *MessageWriter) finish(p []byte) error {
	switch {
	case w.err != nil:
		return w.err
	case w.done:
		if p != nil {
			return errWriterDone
		}
		return nil
	}
	if err := w.t.WriteMessage(w.ctx, p, true, &psi.WriteOptions{Properties: &w.props}); err != nil {
		w.fail(err)
		return w.err
	}
	w.n += int64(len(p))
	w.c.noteSent(w.n)
	w.release()
	return nil
}

// Abort abandons the message: the peer's reader gets an error wrapping
// post.ErrReset for it instead of a complete message. On a stack that
// cannot abandon one message the Carrier's transient is aborted as well.
// Abort after Close does nothing.
func (w *MessageWriter) Abort() error {
	if w.done {
		return nil
	}
	w.fail(errWriterAborted)
	return nil
}

// outMsg is a queued message.
type outMsg struct {
	m        *post.Message
	seq      uint64
	size     int64
	cost     int64 // size and queuedOverhead: what it takes of SendBuffer
	queued   time.Time
	deadline time.Time
	idx      int
	more     bool // another message was ready when this one was taken
	chosen   bool // the caller set the ID

	evMu        sync.Mutex // orders the sent and acknowledged events
	sentEmitted bool
	ackPending  bool
}

// queuedOverhead is what a queued message counts against SendBuffer
// beyond its content: about the memory its entry holds (the Message, its
// outMsg, the heap and map slots), so that empty or tiny messages cannot
// queue without bound.
const queuedOverhead = 256

// sendQueue orders outbound messages and bounds their total size.
type sendQueue struct {
	mu       sync.Mutex
	h        msgHeap
	pending  map[post.MessageID]*outMsg   // queued, parked or in flight
	waiters  map[post.MessageID][]*outMsg // parked on an antecedent
	failed   map[post.MessageID]struct{}
	failedQ  []post.MessageID
	chosen   map[post.MessageID]struct{} // recent IDs the caller set
	chosenQ  []post.MessageID
	bytes    int64
	limit    int64
	seq      uint64
	inflight int
	lost     int // messages failed or dropped unsent, not for their lifetime
	closed   bool
	held     bool          // tests: keep next from taking messages
	wake     chan struct{} // to the single consumer
	changed  chan struct{} // broadcast to producers and drainers; lazy
}

// maxFailedIDs bounds the failed IDs remembered for antecedents, and the
// caller-chosen IDs remembered as sent.
const maxFailedIDs = 4096

// remember records an ID the caller chose, so that later messages may
// name it as an antecedent.
func (q *sendQueue) remember(id post.MessageID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.chosen[id]; ok {
		return
	}
	q.chosen[id] = struct{}{}
	q.chosenQ = append(q.chosenQ, id)
	if len(q.chosenQ) > maxFailedIDs {
		delete(q.chosen, q.chosenQ[0])
		q.chosenQ = q.chosenQ[1:]
	}
}

// knows reports whether id is queued, failed or a remembered chosen ID.
func (q *sendQueue) knows(id post.MessageID) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, p := q.pending[id]
	_, f := q.failed[id]
	_, c := q.chosen[id]
	return p || f || c
}

func newSendQueue(limit int64) *sendQueue {
	return &sendQueue{
		pending: make(map[post.MessageID]*outMsg),
		waiters: make(map[post.MessageID][]*outMsg),
		failed:  make(map[post.MessageID]struct{}),
		chosen:  make(map[post.MessageID]struct{}),
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
		if _, dup := q.pending[om.m.ID]; dup && om.chosen {
			// Two messages under one ID would make it name neither
			// (antecedents, Flush).
			q.mu.Unlock()
			return post.Errorf(post.ErrInvalid, "message ID %d is already queued or being sent", om.m.ID)
		}
		// One message larger than the buffer may go alone.
		if q.bytes == 0 || q.bytes+om.cost <= q.limit {
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
	q.bytes += om.cost
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

// done resolves a message taken with next: err is why it was not sent.
func (q *sendQueue) done(om *outMsg, err error) {
	q.mu.Lock()
	q.inflight--
	if err != nil && !errors.Is(err, post.ErrExpired) {
		q.lost++
	}
	q.resolve(om, err == nil)
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
	q.bytes -= om.cost
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

// drain waits until nothing is queued or in flight. Once the queue is
// closed only the message in flight remains, which the sender resolves.
func (q *sendQueue) drain(ctx context.Context) error {
	q.mu.Lock()
	for len(q.pending) > 0 {
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

// undelivered returns how many messages failed or were dropped unsent,
// not counting those dropped for their lifetime.
func (q *sendQueue) undelivered() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lost
}

// close fails every message not yet taken and returns how many.
func (q *sendQueue) close() int {
	q.mu.Lock()
	q.closed = true
	// The message in flight, if any, is the sender's to report.
	left := []*outMsg(q.h)
	for _, ws := range q.waiters {
		left = append(left, ws...)
	}
	q.lost += len(left)
	for _, om := range left {
		delete(q.pending, om.m.ID)
		q.bytes -= om.cost
	}
	q.h = nil
	clear(q.waiters)
	q.notify()
	q.mu.Unlock()
	for _, om := range left {
		emit(om.m, post.EventError, post.Errorf(post.ErrClosed, "carrier closed before message %d was sent", om.m.ID))
	}
	return len(left)
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
