package tcp

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// corkSize bounds the TLS records gathered before a write system call.
const corkSize = 128 << 10

var corkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, corkSize)
	return &b
}}

// corkConn sits under the tls.Conn. While corked it gathers the records of
// one WriteMessage call, so that a 64 KiB message leaves in one write system
// call rather than one per 16 KiB record. The buffer is pooled and held
// only while corked.
type corkConn struct {
	net.Conn
	mu      sync.Mutex
	buf     *[]byte              // non-nil while corked
	drained atomic.Bool          // the last Read emptied the kernel's receive queue
	eof     atomic.Bool          // a Read met the peer's FIN
	hs      atomic.Pointer[slot] // the server handshake, while it runs
}

// Read notes whether it emptied the kernel's receive queue: a read shorter
// than its buffer took all there was. It notes the peer's FIN too:
// crypto/tls reads nothing after a close_notify, so a FIN it reads came
// without one.
func (c *corkConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.drained.Store(n < len(p))
	if err == io.EOF {
		c.eof.Store(true)
	}
	if sl := c.hs.Load(); sl != nil && n > 0 {
		sl.progress()
	}
	return n, err
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.buf = corkPool.Get().(*[]byte)
	c.mu.Unlock()
}

// uncork writes what was gathered and returns to writing through.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	*c.buf = (*c.buf)[:0]
	corkPool.Put(c.buf)
	c.buf = nil
	return err
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return c.Conn.Write(p)
	}
	if len(*c.buf)+len(p) > cap(*c.buf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= cap(*c.buf) {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *corkConn) flushLocked() error {
	b := *c.buf
	if len(b) == 0 {
		return nil
	}
	_, err := c.Conn.Write(b)
	*c.buf = b[:0]
	return err
}
