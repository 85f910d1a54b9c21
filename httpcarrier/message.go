package httpcarrier

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/post"
)

// partSize is the largest part read or written at once.
const partSize = 32 << 10

// headMsg is the start of a message: its head, the body bytes read with
// it, and whether the message ended there.
type headMsg struct {
	head, rest []byte
	end        bool
}

// readHead reads the next message's head from c. A clean io.EOF means the
// peer closed the fork between messages.
func readHead(ctx context.Context, c *carrier.Carrier, limit int) (headMsg, error) {
	var buf []byte
	for {
		m, err := c.Ready(ctx, carrier.ReadyOptions{Max: partSize})
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return headMsg{}, err
		}
		from := len(buf)
		if buf == nil {
			buf = m.Content // Ready's own copy: the caller's to keep
		} else {
			buf = append(buf, m.Content...)
		}
		if i := headEnd(buf, from); i >= 0 {
			if i > limit {
				return headMsg{}, errHeadTooLarge
			}
			return headMsg{head: buf[:i:i], rest: buf[i:], end: m.End}, nil
		}
		if len(buf) > limit {
			return headMsg{}, errHeadTooLarge
		}
		if m.End {
			return headMsg{}, post.Errorf(post.ErrMalformed, "message ended inside the head")
		}
	}
}

// readSmall reads one whole message of at most limit bytes.
func readSmall(ctx context.Context, c *carrier.Carrier, limit int) ([]byte, error) {
	var buf []byte
	for {
		m, err := c.Ready(ctx, carrier.ReadyOptions{Max: partSize})
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		buf = append(buf, m.Content...)
		if len(buf) > limit {
			return nil, errHeadTooLarge
		}
		if m.End {
			return buf, nil
		}
	}
}

// body reads the rest of a message as an HTTP body. At the end of the
// message it checks the declared length and runs atEnd (which reads the
// trailers, if any) before returning io.EOF. Close may be called while a
// Read is blocked.
type body struct {
	c      *carrier.Carrier
	ctx    context.Context
	pre    []byte // body bytes read with the head
	end    bool   // the message has ended
	want   int64  // declared Content-Length, or -1
	n      int64
	atEnd  func() error
	more   bool   // another message (trailers) follows this one
	onRead func() // before the first read from the carrier (100-continue)
	onDone func(clean bool)

	mu   sync.Mutex
	err  error // sticky: io.EOF after a clean end
	once sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := b.read(p)
	if err != nil {
		b.err = err
		b.done(errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF))
	}
	return n, err
}

func (b *body) read(p []byte) (int, error) {
	var n int
	switch {
	case len(b.pre) > 0:
		n = copy(p, b.pre)
		b.pre = b.pre[n:]
	case !b.end:
		if b.onRead != nil {
			b.onRead()
			b.onRead = nil
		}
		m, err := b.c.Ready(b.ctx, carrier.ReadyOptions{Max: len(p), Buffer: p})
		if err != nil {
			if cerr := b.ctx.Err(); cerr != nil {
				return 0, cerr // cancelled, and the fork aborted
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the fork ended inside the message
			}
			return 0, err
		}
		n = copy(p, m.Content)
		b.end = m.End
	}
	b.n += int64(n)
	if b.want >= 0 && b.n > b.want {
		return 0, post.Errorf(post.ErrMalformed, "body longer than its content-length %d", b.want)
	}
	if len(b.pre) > 0 || !b.end {
		return n, nil
	}
	if b.want >= 0 && b.n != b.want {
		return n, io.ErrUnexpectedEOF
	}
	if b.atEnd != nil {
		if err := b.atEnd(); err != nil {
			return n, err
		}
	}
	return n, io.EOF
}

// Close stops reading; unless the body was read to its end, onDone
// reports an unclean end (the caller aborts the fork).
func (b *body) Close() error {
	if b.mu.TryLock() {
		if b.err == nil {
			b.err = http.ErrBodyReadAfterClose
		}
		b.mu.Unlock()
		b.done(false)
		return nil
	}
	// A Read is blocked: onDone aborts the fork, which ends it.
	b.done(false)
	return nil
}

func (b *body) done(clean bool) {
	b.once.Do(func() {
		if b.onDone != nil {
			b.onDone(clean)
		}
	})
}

// readToEnd reports whether the body was read to the end of its message,
// or the whole message has arrived (unread bytes only in b) and there is
// nothing after it.
func (b *body) readToEnd() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err == io.EOF || b.end && !b.more && (b.err == nil || b.err == http.ErrBodyReadAfterClose)
}

// drain reads and drops the rest of the message, at most limit bytes,
// even after the handler closed the body; it reports whether the message
// was read to its end.
func (b *body) drain(limit int64) bool {
	b.mu.Lock()
	if b.err == http.ErrBodyReadAfterClose {
		b.err = nil
	}
	b.mu.Unlock()
	io.Copy(io.Discard, io.LimitReader(b, limit))
	return b.readToEnd()
}
