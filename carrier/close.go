package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Close is CloseContext bounded by Config.Linger (3 s by default).
func (c *Carrier) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.linger())
	defer cancel()
	return c.CloseContext(ctx)
}

// CloseContext ends the Carrier in order: it sends the messages already
// queued, closes the transient and waits until the peer's stack confirms
// it has everything. Against a live peer that takes about a round trip.
// It returns nil only if every message SendMsg accepted was delivered to
// the peer's stack, apart from those dropped for their lifetime
// (EventExpired); otherwise it returns an error, and the messages not sent
// are reported with EventError. If ctx ends first, the Carrier is aborted
// (see Abort) and the error wraps post.ErrTimeout and ctx's error. Unread
// inbound data is discarded, and what arrives while the queue is flushed
// is read and dropped unless a Ready is reading then (a later Ready fails
// with post.ErrClosed); a blocked Ready returns post.ErrClosed once the
// transient closes. Calls after the first wait for it to finish and
// return what it found: nil only after a Close that returned nil, an error
// wrapping post.ErrClosed after an Abort.
func (c *Carrier) CloseContext(ctx context.Context) (err error) {
	if c.closing.Swap(true) {
		return c.waitClosed(ctx)
	}
	defer func() {
		c.closeErr = err
		close(c.closed)
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // Abort cuts a Close short
		select {
		case <-c.aborted:
			cancel()
		case <-ctx.Done():
		}
	}()
	var errs []error
	var closeErr error
	stopDiscard := c.discardInbound(ctx)
	c.queue.drain(ctx)
	stopDiscard()
	t := c.stop()
	c.dropInbound()
	if n := c.queue.close(); n > 0 {
		errs = append(errs, post.Errorf(post.ErrClosed, "%d queued messages not sent", n))
	}
	c.cancel() // ends a write still in flight: only when ctx ended
	c.wg.Wait()
	c.dropLeftForks()
	c.mu.Lock()
	lost := c.lost
	c.mu.Unlock()
	if lost != nil {
		errs = append(errs, fmt.Errorf("a message was not delivered: %w", lost))
	}
	if t != nil {
		c.assoc.ObservePath(t.Path())
		c.keepStats(t)
		switch {
		case ctx.Err() != nil || c.writer.Load():
			// Part of a message may be on its way: make sure the peer
			// never takes it as complete.
			psi.Abort(t, post.ErrClosed)
			if c.writer.Load() {
				errs = append(errs, post.Errorf(post.ErrClosed, "closed with a MessageWriter open"))
			}
		default:
			if err := psi.CloseContext(ctx, t); err != nil && !benign(err) {
				closeErr = opError("close", t, err) // says why, timeout included
				if lost == nil {
					errs = append(errs, closeErr)
				}
			}
		}
	}
	if err := ctx.Err(); err != nil && closeErr == nil {
		select {
		case <-c.aborted:
			errs = append(errs, post.Errorf(post.ErrClosed, "aborted while closing"))
		default:
			errs = append(errs, fmt.Errorf("%w: close: %w", post.ErrTimeout, err))
		}
	}
	if c.ownAssoc {
		c.assoc.Wait(ctx) // the race's losers, collected in the background
	}
	return errors.Join(errs...)
}

// discardInbound reads and drops what the peer sends while Close flushes
// the queue, unless a Ready is reading: Close discards unread inbound data
// anyway, and a peer closing at the same time would otherwise wait on our
// window while we wait on its, both until their linger. The returned stop
// ends it; Ready fails with post.ErrClosed from then on, as the rest of
// a message read in part is gone. With nothing queued it does nothing:
// every Close of a Carrier would otherwise cost a goroutine and a buffer.
func (c *Carrier) discardInbound(ctx context.Context) (stop func()) {
	if !c.queue.busy() {
		return func() {} // nothing to flush: Close does not wait here
	}
	if !c.rmu.TryLock() {
		return func() {}
	}
	c.discarded.Store(true)
	c.in = inbound{}
	if c.recv != nil {
		c.recv.settle(0, 0)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := c.transient()
		if t == nil {
			return
		}
		buf := make([]byte, 32<<10)
		for {
			if _, _, err := t.ReadMessage(ctx, buf); err != nil && !messageReset(err) {
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
		c.rmu.Unlock()
	}
}

// benign reports whether a transient's Close error only says that it was
// already closed, by the peer's orderly close or the Carrier itself.
func benign(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, post.ErrClosed) && !errors.Is(err, post.ErrTimeout)
}

// Abort ends the Carrier at once: queued messages are dropped and
// reported with EventError, the transient is aborted and the peer told
// (its calls fail with an error wrapping post.ErrReset), and blocked calls
// return. It cuts short a Close in progress.
func (c *Carrier) Abort() error {
	c.abortOne.Do(func() { close(c.aborted) })
	if c.closing.Swap(true) {
		<-c.closed
		return nil
	}
	defer func() {
		c.closeErr = errAborted
		close(c.closed)
	}()
	t := c.stop()
	c.dropInbound()
	c.queue.close()
	c.cancel()
	if t != nil {
		c.keepStats(t)
		psi.Abort(t, post.ErrClosed)
	}
	c.wg.Wait()
	c.dropLeftForks()
	return nil
}

// stop marks the Carrier closed and takes its transient.
func (c *Carrier) stop() psi.Transient {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = Closed
	t := c.t
	c.t = nil
	c.signal()
	c.endEvents(t, nil)
	return t
}

// errAborted is what a Close after Abort returns: nothing queued is
// known to have arrived.
var errAborted = post.Errorf(post.ErrClosed, "the carrier was aborted")

// waitClosed waits for the Close or Abort in progress and returns its
// result.
func (c *Carrier) waitClosed(ctx context.Context) error {
	select {
	case <-c.closed:
		return c.closeErr
	case <-ctx.Done():
		return fmt.Errorf("%w: close: %w", post.ErrTimeout, ctx.Err())
	}
}

// opError wraps err with the operation, stack and path, unless it already
// names them.
func opError(op string, t psi.Transient, err error) error {
	var oe *post.OpError
	if errors.As(err, &oe) {
		return err
	}
	return &post.OpError{Op: op, Stack: t.Stack(), Path: t.Path().String(), Err: err}
}

// endedError is the error for op on a Carrier whose transient ended with
// err: it wraps post.ErrPeerClosed when the peer closed or reset it.
func endedError(op string, err error) error {
	var local localEnd
	if errors.Is(err, post.ErrPeerClosed) || errors.As(err, &local) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, post.ErrClosed) || errors.Is(err, post.ErrReset) {
		return fmt.Errorf("%w: cannot %s: %w", post.ErrPeerClosed, op, err)
	}
	return err
}
