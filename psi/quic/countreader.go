package quic

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	quicgo "github.com/quic-go/quic-go"
)

// countReader reads a stream and counts the bytes read. Once the whole
// stream has arrived it can keep what is still unread (keepRest), and
// serves that when the connection ends before the reader comes: quic-go
// then reports the connection's error even with data still buffered.
type countReader struct {
	s *quicgo.Stream
	n atomic.Int64 // bytes read, served from rest too

	mu     sync.Mutex // held across s.Read, so keepRest sees a settled n
	rest   []byte     // the stream's unread end as kept by keepRest
	restAt int64      // n when rest was kept

	// acct is the listener's account of the stream's connection (nil on
	// a dialled one): the kept rest's array is charged to it (kept, its
	// size; see account.takeKept) and pins it, so that the rest stays
	// charged after the connection ends, until it is read or dropped
	// (unpin), or the reader is collected.
	acct  *account
	kept  atomic.Int64
	unpin atomic.Pointer[func()]
}

func newCountReader(s *quicgo.Stream, acct *account) *countReader {
	return &countReader{s: s, acct: acct}
}

func (c *countReader) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.s.Read(p)
	c.n.Add(int64(n))
	c.acct.readStream(c.s.StreamID(), n, err)
	switch {
	case err == io.EOF:
		c.rest = nil
		c.dropPin()
		c.giveKept()
	case c.rest != nil && n > 0:
		c.trimRest()
		if err != nil && connEnded(err) {
			return n, nil // readRest serves the next read
		}
	case c.rest != nil && err != nil && connEnded(err):
		return c.readRest(p)
	}
	return n, err
}

// trimRest drops the part of rest the stream's own reads went past once
// it is half of rest, so that rest is at most twice what is unread,
// which quic-go holds too within the connection's flow-control window.
// An empty rest is kept: it still stands for the io.EOF to come.
func (c *countReader) trimRest() {
	off := min(c.n.Load()-c.restAt, int64(len(c.rest)))
	if len(c.rest) == 0 || 2*off < int64(len(c.rest)) {
		return
	}
	r := make([]byte, int64(len(c.rest))-off)
	copy(r, c.rest[off:])
	c.rest, c.restAt = r, c.n.Load()
	// The new array is charged instead of the old, unless the charge
	// went back already (dropPin).
	if old := c.kept.Load(); old > int64(len(r)) && c.kept.CompareAndSwap(old, int64(len(r))) {
		c.acct.giveKept(old - int64(len(r)))
	}
}

// readRest serves the kept end of the stream, then io.EOF.
func (c *countReader) readRest(p []byte) (int, error) {
	off := c.n.Load() - c.restAt
	if off >= int64(len(c.rest)) {
		c.rest = nil
		c.dropPin()
		c.giveKept()
		return 0, io.EOF
	}
	n := copy(p, c.rest[off:])
	c.n.Add(int64(n))
	return n, nil
}

// keepRest peeks at all of the stream not yet read into buf, which must
// be larger than that and charged to acct (takeKept), and keeps it. It
// returns io.EOF when it did, and then owns the charge; the whole stream
// must have arrived, so a Read in progress does not block it for long.
func (c *countReader) keepRest(buf []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, err := c.s.Peek(buf)
	if err == io.EOF {
		c.rest, c.restAt = buf[:k:k], c.n.Load()
		if k == 0 {
			// Read already: an empty rest stands for the io.EOF.
			c.rest = []byte{}
			c.acct.giveKept(int64(len(buf)))
			return err
		}
		c.kept.Store(int64(len(buf)))
		if c.unpin.Load() == noPinPtr {
			c.giveKept() // dropped already
		}
		if c.acct != nil && c.unpin.Load() == nil {
			f := c.acct.pin()
			c.unpin.Store(&f)
			runtime.AddCleanup(c, func(f func()) { f() }, f)
		}
	}
	return err
}

// dropPin gives back the pin of a kept rest, once it is read or its
// transient is released; it does not wait for a Read in progress. The
// rest's charge goes back with it when the transient is released
// (release); a rest being read gives it back itself.
func (c *countReader) dropPin() {
	if f := c.unpin.Swap(noPinPtr); f != nil && f != noPinPtr {
		(*f)()
	}
}

// release gives back the pin and the charge of a kept rest that is not
// read any more.
func (c *countReader) release() {
	c.dropPin() // first: a keepRest after it sees it and gives back
	c.giveKept()
}

// giveKept gives back the kept rest's charge, once.
func (c *countReader) giveKept() {
	c.acct.giveKept(c.kept.Swap(0))
}

// noPin marks a countReader whose pin was given back, so that none is
// taken again.
var (
	noPin    = func() {}
	noPinPtr = &noPin
)

// connEnded reports whether a stream read failed because its connection
// ended, rather than a deadline or the stream's own reset.
func connEnded(err error) bool {
	var se *quicgo.StreamError
	return !errors.Is(err, os.ErrDeadlineExceeded) && !errors.As(err, &se)
}
