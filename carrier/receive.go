package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// ReadyOptions choose between complete and partial reception. The zero
// value asks for complete messages.
type ReadyOptions struct {
	// Max, if positive, asks for partial messages of at most Max bytes.
	Max int
	// Min is the least number of bytes of an incomplete message worth
	// delivering; the final part of a message may be shorter. Defaults to 1.
	// With Max set, a Min over Max fails with an error wrapping
	// post.ErrInvalid.
	Min int
	// Buffer, if set, is where the content is read: the returned Content
	// aliases it when the message fits, so a caller that reuses Buffer
	// receives without allocating. The Carrier keeps no reference to it
	// after Ready returns.
	Buffer []byte
}

// inbound holds bytes read from the transient but not yet delivered.
type inbound struct {
	buf  []byte
	user bool  // buf is the caller's ReadyOptions.Buffer
	cap  int   // capacity to allocate after handing buf over
	off  int64 // offset of buf[0] in the current message
	end  bool  // buf completes the message
}

const keepInboundCap = 1 << 20

// Receive returns the next complete Message. A message larger than
// Config.MaxMessageSize fails with an error wrapping
// post.ErrMessageTooLarge and stays pending: Ready with Max set receives
// it in parts. After the peer's
// orderly close and the last message, it returns io.EOF. On a Carrier
// from Accept, what Receive gathers counts against the Listener's
// Config.ReceiveBudget: it waits for room there, and fails with an
// error wrapping post.ErrBackpressure if the budget ended the Carrier
// because its peer stalled half-way through a message. On a dormant
// Carrier from Initiate (Config.Lazy, or one that idled out) it waits,
// until ctx ends, for a Send to establish the transient: a read dials
// nothing, so a Lazy Carrier whose peer speaks first must send first.
func (c *Carrier) Receive(ctx context.Context) (*post.Message, error) {
	return c.Ready(ctx, ReadyOptions{})
}

// Ready waits for the next complete Message, or for the next part of one
// when opts.Max is set. Nothing is read from the network until Ready is
// called, so a slow receiver applies back-pressure to the sender through
// the stack's flow control. If ctx ends, bytes already read are kept for
// the next call. A message the sender abandoned, or cut by the peer's
// close, gives an error, never a part with End set.
func (c *Carrier) Ready(ctx context.Context, opts ReadyOptions) (*post.Message, error) {
	m, _, err := c.ready(ctx, opts, false)
	return m, err
}

// ready is Ready. With keep, a whole message stays charged to the
// Listener's receive budget, apart from the Carrier, until release is
// called: a Sink or Responder queues it.
func (c *Carrier) ready(ctx context.Context, opts ReadyOptions, keep bool) (m *post.Message, release func(), err error) {
	if c.kind == kindSource {
		return nil, nil, post.Errorf(post.ErrNotSupported, "a source cannot receive")
	}
	partial := opts.Max > 0
	if opts.Min <= 0 {
		opts.Min = 1
	}
	if partial && opts.Min > opts.Max {
		return nil, nil, post.Errorf(post.ErrInvalid, "ReadyOptions.Min %d exceeds Max %d", opts.Min, opts.Max)
	}
	cl := c.recv
	if cl != nil {
		defer c.dropInbound() // after the unlock: a Close that found rmu held
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.discarded.Load() {
		return nil, nil, post.Errorf(post.ErrClosed, "the carrier is closing: unread inbound data is discarded")
	}
	in := &c.in
	limit := c.cfg.maxMessage()
	if cl != nil {
		limit = min(limit, cl.b.limit)
		defer func() {
			if c.closing.Load() || c.evicted.Load() {
				*in = inbound{}
			}
			// What the Carrier holds now, the budget counts; but not a
			// buffer for parts (its size is the caller's Max), only
			// what it still holds of a whole gather.
			n := chargeOf(c.inboundCap())
			if partial {
				cl.settleAtMost(n, len(in.buf) == 0)
			} else {
				cl.settle(n, 0)
			}
		}()
	}
	if opts.Buffer != nil && len(in.buf) == 0 && !in.end {
		// Read straight into the caller's buffer, and never keep it.
		own := in.buf
		in.buf, in.user = opts.Buffer[:0], true
		defer func() {
			if in.user {
				in.buf = append(own[:0], in.buf...)
				in.user = false
			}
		}()
	}
	for {
		if partial && (len(in.buf) >= opts.Min || in.end) {
			return c.deliver(min(len(in.buf), opts.Max), opts), nil, nil
		}
		if !partial && in.off+int64(len(in.buf)) > limit {
			// The message stays pending, for Ready with Max to take in
			// parts. Checked before the end: one read may bring the
			// rest of a message and its end at once.
			if cl != nil {
				cl.stop()
				if limit < c.cfg.maxMessage() {
					return nil, nil, post.Errorf(post.ErrMessageTooLarge, "inbound message over %d bytes, more than the listener's Config.ReceiveBudget can hold; read it in parts with Ready", limit)
				}
			}
			return nil, nil, post.Errorf(post.ErrMessageTooLarge, "inbound message over %d bytes; read it in parts with Ready", limit)
		}
		if !partial && in.end {
			if cl != nil {
				m, release := c.deliverWhole(cl, keep)
				return m, release, nil
			}
			return c.deliver(len(in.buf), opts), nil, nil
		}
		// Make room for the next read.
		want := 64 << 10
		if partial {
			want = opts.Max - len(in.buf)
		} else if rest := limit + 1 - in.off - int64(len(in.buf)); rest < int64(want) {
			want = int(max(rest, 1))
		}
		free := cap(in.buf) - len(in.buf)
		// A counted gather fills its buffer before it grows it.
		short := !in.user && free < want && (cl == nil || partial)
		if free == 0 || short {
			size := max(len(in.buf)+want, 2*cap(in.buf))
			switch {
			case cl != nil && !partial && len(in.buf) == 0:
				// Nothing counted until a message longer than
				// gatherFree arrives: an idle Carrier holds no room.
				size = min(max(in.cap, want), gatherFree)
			case cl != nil && !partial:
				size = max(size, in.cap)
			case len(in.buf) == 0 && in.cap > 0:
				size = max(in.cap, want) // at least the last large message
			}
			if !partial {
				size = int(min(int64(size), limit+1-in.off))
			}
			if cl != nil && !partial {
				if err := cl.grow(ctx, chargeOf(int64(size)), c.live); err != nil {
					if errors.Is(err, errGone) {
						if _, err = c.readable(ctx); err == nil {
							err = post.ErrClosed
						}
					}
					return nil, nil, err
				}
			}
			nb := make([]byte, len(in.buf), size)
			copy(nb, in.buf)
			in.buf, in.user = nb, false
		}
		t, err := c.readable(ctx)
		if err != nil {
			return nil, nil, err
		}
		room := in.buf[len(in.buf):cap(in.buf)]
		if partial && len(room) > want {
			room = room[:want]
		}
		early := c.earlyOn(t)
		n, end, err := t.ReadMessage(ctx, room)
		in.buf = in.buf[:len(in.buf)+n]
		in.end = end
		if n > 0 {
			c.touch()
			if cl != nil {
				cl.noteRead(n)
			}
		}
		if err != nil {
			if cerr := ctxend.Err(ctx); cerr != nil {
				// Our own cancellation: the transient stays usable and
				// the bytes read so far stay buffered.
				return nil, nil, cerr
			}
			if c.revivable(t) {
				continue
			}
			if early != nil && n == 0 && len(in.buf) == 0 && in.off == 0 && c.earlyFailed(ctx, early) {
				// A 0-RTT attempt that won the race failed its
				// handshake: wait for the sender to race again.
				continue
			}
			cut := in.off > 0 || len(in.buf) > 0
			if cut {
				// Drop the rest of a message that will never complete.
				in.buf, in.off, in.end = in.buf[:0], 0, false
			}
			if errors.Is(err, io.EOF) && cut {
				err = fmt.Errorf("%w: the peer closed in the middle of a message", io.ErrUnexpectedEOF)
			}
			if !messageReset(err) {
				c.lose(t, opError("receive", t, err))
			}
			if c.evicted.Load() {
				return nil, nil, opError("receive", t, errEvicted)
			}
			if c.closing.Load() {
				return nil, nil, post.ErrClosed
			}
			if errors.Is(err, io.EOF) {
				return nil, nil, io.EOF
			}
			return nil, nil, opError("receive", t, err)
		}
	}
}

// revivable reports whether a read error on t came from the Carrier retiring
// t itself (idle timeout) while it can revive, so reading should wait.
func (c *Carrier) revivable(t psi.Transient) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.initiator && c.state != Closed && c.t != t && c.selfRetired
}

// messageReset reports whether a read error is the peer abandoning one
// message (psi.MessageAborter), after which the transient goes on.
func messageReset(err error) bool {
	return errors.Is(err, framer.ErrAborted)
}

// lose drops t after it ended other than by this side's choice (the peer
// closed or reset it, or the path failed): the Carrier is closed, and
// later calls fail with why. It is not dormant, so nothing revives it.
func (c *Carrier) lose(t psi.Transient, why error) {
	c.mu.Lock()
	if c.t != t || t == nil || c.state == Closed {
		c.mu.Unlock()
		return
	}
	c.t, c.state, c.ended = nil, Closed, why
	var local localEnd
	orderly := errors.Is(why, io.EOF) && !errors.Is(why, io.ErrUnexpectedEOF) && !errors.As(why, &local)
	if !orderly && c.wrote == t && c.lost == nil && !errors.As(why, &local) {
		// Nothing confirms that the messages handed to t arrived.
		c.lost = opError("send", t, why)
	}
	c.signal()
	c.mu.Unlock()
	c.assoc.ObservePath(t.Path())
	c.keepStats(t)
	c.log.Debug("carrier ended", "err", why)
	c.endEvents(t, why)
	if orderly {
		// The peer closed in order: this ends our side too, once the
		// forks it made before are taken off t.
		if !c.keepForks(t) {
			t.Close()
		}
	} else {
		psi.Abort(t, why)
	}
}

// signal wakes the callers waiting in readable. c.mu is held.
func (c *Carrier) signal() {
	close(c.revived)
	c.revived = make(chan struct{})
}

func (c *Carrier) deliver(n int, opts ReadyOptions) *post.Message {
	in := &c.in
	m := &post.Message{Offset: in.off}
	defer c.noteReceived(m)
	rest := len(in.buf) - n
	if rest == 0 && (in.user || n >= 32<<10 && n >= cap(in.buf)/2) {
		// The content is in the caller's buffer, or is a large part that
		// fills most of ours: hand it over rather than copy it.
		m.Content = in.buf[:n:n]
		m.End = in.end
		m.Partial = !(m.End && in.off == 0)
		if !in.user {
			in.cap = min(n+4096, keepInboundCap)
		}
		in.buf, in.user = nil, false
		if m.End {
			in.off, in.end = 0, false
		} else {
			in.off += int64(n)
		}
		return m
	}
	m.Content = append([]byte(nil), in.buf[:n]...)
	m.End = in.end && rest == 0
	m.Partial = !(m.End && in.off == 0)
	copy(in.buf, in.buf[n:])
	in.buf = in.buf[:rest]
	if m.End {
		in.off = 0
		in.end = false
	} else {
		in.off += int64(n)
	}
	if rest == 0 && cap(in.buf) > keepInboundCap {
		in.buf = nil
	}
	return m
}

// readable returns the transient to read from, waiting through dormancy
// for a Carrier that can revive.
func (c *Carrier) readable(ctx context.Context) (psi.Transient, error) {
	for {
		c.mu.Lock()
		t, st, ch, ended := c.t, c.state, c.revived, c.ended
		c.mu.Unlock()
		switch {
		case t != nil:
			return t, nil
		case st == Closed && ended != nil && !c.closing.Load():
			if errors.Is(ended, io.EOF) && !errors.Is(ended, io.ErrUnexpectedEOF) {
				return nil, io.EOF
			}
			return nil, ended
		case st == Closed:
			return nil, post.ErrClosed
		case !c.initiator:
			return nil, post.Errorf(post.ErrDormant, "transient closed")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// deliverWhole delivers the whole message in c.in on a Carrier under a
// receive budget. The Carrier keeps no buffer past gatherFree; with
// keep, what the message holds stays charged until release is called.
func (c *Carrier) deliverWhole(cl *claim, keep bool) (m *post.Message, release func()) {
	in := &c.in
	own, size := !in.user, int64(cap(in.buf))
	m = c.deliver(len(in.buf), ReadyOptions{})
	handed := in.buf == nil
	if cap(in.buf) > gatherFree {
		in.buf = nil
	}
	if !keep {
		return m, nil
	}
	var q int64
	switch {
	case handed && own:
		q = chargeOf(size) // the gather buffer, charge and all
	case !handed:
		q = chargeOf(int64(len(m.Content))) // a copy
	}
	return m, cl.settle(chargeOf(c.inboundCap()), q)
}

// inboundCap is the capacity of the Carrier's own inbound buffer.
func (c *Carrier) inboundCap() int64 {
	if c.in.user {
		return 0
	}
	return int64(cap(c.in.buf))
}

// live returns the channel closed when the Carrier's state next changes,
// and whether it is still open.
func (c *Carrier) live() (<-chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revived, c.state != Closed
}

// dropInbound gives back the inbound buffer of a Carrier this side
// closed, or whose gather was evicted, unless a read holds it: that read
// gives it back as it returns.
func (c *Carrier) dropInbound() {
	if c.recv == nil || !c.closing.Load() && !c.evicted.Load() || !c.rmu.TryLock() {
		return
	}
	defer c.rmu.Unlock()
	c.in = inbound{}
	c.recv.settle(0, 0)
}

// evictGather ends a Carrier whose half-gathered message the receive
// budget evicted: its peer is reset, and Receive fails with errEvicted.
func (c *Carrier) evictGather() {
	c.evicted.Store(true)
	if t := c.transient(); t != nil {
		c.lose(t, errEvicted)
	} else {
		c.endWith(errEvicted)
	}
	c.dropInbound()
}
