package netem

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/postsockets/postsockets/post"
)

// closedError matches both net.ErrClosed and post.ErrClosed with errors.Is.
type closedError struct{}

func (closedError) Error() string   { return "use of closed network connection" }
func (closedError) Unwrap() []error { return []error{net.ErrClosed, post.ErrClosed} }

var errClosed error = closedError{}

// errDropped tells link.forward that deliver dropped and counted a packet.
var errDropped = errors.New("netem: dropped")

// timeoutError is returned when a deadline passes. It is a net.Error
// whose Timeout is true and matches os.ErrDeadlineExceeded and
// post.ErrTimeout with errors.Is.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Unwrap() []error {
	return []error{os.ErrDeadlineExceeded, post.ErrTimeout}
}

// deadline is a settable deadline whose channel closes when it passes.
type deadline struct {
	mu    sync.Mutex
	gen   uint64
	timer *time.Timer
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

func closedChan(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	expired := closedChan(d.ch)
	if t.IsZero() {
		if expired {
			d.ch = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !expired {
			close(d.ch)
		}
		return
	}
	if expired {
		d.ch = make(chan struct{})
	}
	gen, ch := d.gen, d.ch
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
		}
	})
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
