package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"

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
// orderly close and the last message, it returns io.EOF.
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
	if c.kind == kindSource {
		return nil, post.Errorf(post.ErrNotSupported, "a source cannot receive")
	}
	partial := opts.Max > 0
	if opts.Min <= 0 {
		opts.Min = 1
	}
	if partial && opts.Min > opts.Max {
		return nil, post.Errorf(post.ErrInvalid, "ReadyOptions.Min %d exceeds Max %d", opts.Min, opts.Max)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	in := &c.in
	limit := c.cfg.maxMessage()
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
			return c.deliver(min(len(in.buf), opts.Max), opts), nil
		}
		if !partial && in.off+int64(len(in.buf)) > limit {
			// The message stays pending, for Ready with Max to take in
			// parts. Checked before the end: one read may bring the
			// rest of a message and its end at once.
			return nil, post.Errorf(post.ErrMessageTooLarge, "inbound message over %d bytes; read it in parts with Ready", limit)
		}
		if !partial && in.end {
			return c.deliver(len(in.buf), opts), nil
		}
		t, err := c.readable(ctx)
		if err != nil {
			return nil, err
		}
		// Make room for the next read.
		want := 64 << 10
		if partial {
			want = opts.Max - len(in.buf)
		} else if rest := limit + 1 - in.off - int64(len(in.buf)); rest < int64(want) {
			want = int(max(rest, 1))
		}
		if free := cap(in.buf) - len(in.buf); free == 0 || !in.user && free < want {
			size := max(len(in.buf)+want, 2*cap(in.buf))
			if len(in.buf) == 0 && in.cap > 0 {
				size = max(in.cap, want) // at least the last large message
			}
			nb := make([]byte, len(in.buf), size)
			copy(nb, in.buf)
			in.buf, in.user = nb, false
		}
		free := in.buf[len(in.buf):cap(in.buf)]
		if partial && len(free) > want {
			free = free[:want]
		}
		n, end, err := t.ReadMessage(ctx, free)
		in.buf = in.buf[:len(in.buf)+n]
		in.end = end
		if n > 0 {
			c.touch()
		}
		if err != nil {
			if cerr := ctxEnded(ctx); cerr != nil {
				// Our own cancellation: the transient stays usable and
				// the bytes read so far stay buffered.
				return nil, cerr
			}
			if c.revivable(t) {
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
			if c.closing.Load() {
				return nil, post.ErrClosed
			}
			if errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, opError("receive", t, err)
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
		t.Close() // the peer closed in order: this ends our side too
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
