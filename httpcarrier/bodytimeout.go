package httpcarrier

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Defaults of BodyTimeout, as cmd/psgateway's front applies them.
const (
	// DefaultBodyTimeout bounds each wait for request body bytes and is
	// the body's first allowance.
	DefaultBodyTimeout = 30 * time.Second
	// DefaultBodyMinRate is the slowest a request body may arrive on
	// average, past its first allowance: a modem's worth, a trickle.
	DefaultBodyMinRate = 512
)

// BodyTimeout is an http.Handler for an ordinary http.Server in front of
// a Transport (a front gateway): it bounds the time a request body may
// take, which http.Server leaves open unless ReadTimeout bounds the
// whole request (and so every honest upload). Without it a client that
// trickles a body, a byte now and then, holds its connection, a
// goroutine and a fork to the origin for as long as it likes.
//
// A body gets Timeout at first and 1 s more for every MinRate bytes that
// arrive (Apache's mod_reqtimeout rule), and no wait for the next bytes
// may last longer than Timeout. Only the time spent waiting for the
// client counts: while the handler does not read (its origin is slow to
// take the body) the clock stops. A body over its time fails its Read
// with an error wrapping post.ErrTimeout and the connection is closed
// after the response; a front's ReverseProxy answers 502, or nothing if
// it already answered.
//
// Requests without a body, CONNECT (an HTTP/2 tunnel's body is the
// tunnel) and Upgrade requests pass untouched. The deadlines are set
// through http.ResponseController, so ServeHTTP must get the server's
// own ResponseWriter (or one that unwraps to it): put BodyTimeout
// outermost. A zero BodyTimeout bounds bodies by the defaults.
type BodyTimeout struct {
	Handler http.Handler
	// Timeout is the first allowance and the longest wait for body
	// bytes; zero means DefaultBodyTimeout, negative no bound at all.
	Timeout time.Duration
	// MinRate, in bytes a second, earns a body more time as it arrives;
	// zero means DefaultBodyMinRate, negative none (a body then gets
	// Timeout in all).
	MinRate int
}

// errBodyTimeout is what a body over its time returns.
var errBodyTimeout = post.Errorf(post.ErrTimeout, "httpcarrier: request body arrived too slowly")

func (h *BodyTimeout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = DefaultBodyTimeout
	}
	if timeout < 0 || r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" {
		h.Handler.ServeHTTP(w, r)
		return
	}
	rate := h.MinRate
	if rate == 0 {
		rate = DefaultBodyMinRate
	}
	b := &timedBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: timeout, rate: rate}
	r2 := *r
	r2.Body = b
	tw := &answerWriter{ResponseWriter: w}
	h.Handler.ServeHTTP(tw, &r2)
	if b.done() && !tw.answered {
		// The handler gave up without an answer (a ReverseProxy whose
		// request context the failed read ended): net/http would send
		// an empty 200.
		w.Header().Set("Connection", "close")
		http.Error(w, "request body arrived too slowly", http.StatusRequestTimeout)
	}
}

// answerWriter records whether the handler answered (a final status or
// body bytes).
type answerWriter struct {
	http.ResponseWriter
	answered bool
}

func (w *answerWriter) WriteHeader(code int) {
	if code >= 200 {
		w.answered = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(p []byte) (int, error) {
	w.answered = true
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// timedBody is a request body whose reads have deadlines. Its handler's
// reads may run on another goroutine (a Transport's) and outlast the
// handler, so its state is guarded by mu, which a Read does not hold
// while it waits.
type timedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	rate    int

	mu       sync.Mutex
	n        int64         // bytes read
	waited   time.Duration // in Read
	err      error         // sticky: over time, or the end
	deadline time.Time     // of the Read in progress; zero without one
	finished bool          // the handler returned: done ran
	// unbounded: the ResponseWriter cannot set deadlines.
	unbounded bool
}

// left is the time the body may still wait for its client. Called with
// mu held.
func (b *timedBody) left() time.Duration {
	allowed := b.timeout
	if b.rate > 0 {
		allowed += time.Duration(b.n) * time.Second / time.Duration(b.rate)
	}
	return min(allowed-b.waited, b.timeout)
}

func (b *timedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.unbounded {
		b.mu.Unlock()
		return b.ReadCloser.Read(p)
	}
	if b.err != nil {
		defer b.mu.Unlock()
		return 0, b.err
	}
	left := b.left()
	if left <= 0 || b.finished {
		defer b.mu.Unlock()
		b.expire()
		return 0, b.err
	}
	start := time.Now()
	if err := b.rc.SetReadDeadline(start.Add(left)); err != nil {
		// A ResponseWriter that cannot: read without a bound rather
		// than not at all.
		b.unbounded = true
		b.mu.Unlock()
		return b.ReadCloser.Read(p)
	}
	b.deadline = start.Add(left)
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deadline = time.Time{}
	b.waited += time.Since(start)
	b.n += int64(n)
	switch {
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.expire()
		return n, b.err
	case err != nil:
		b.err = err
	}
	if !b.finished {
		// Not reading: the clock stops (HTTP/2 fires a deadline
		// whether or not a Read waits), and at the end net/http's
		// background read of the connection must not time out.
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// expire fails the body and leaves the connection's deadline in the
// past, so that net/http's discard of the rest after the handler does
// not wait for the client either. Called with mu held.
func (b *timedBody) expire() {
	b.err = errBodyTimeout
	b.rc.SetReadDeadline(time.Now())
}

// done ends the handler's part: it reports whether the body ran out of
// time (a Read failed so, or one in progress is past its deadline, as
// when the failing read cancelled the request and the handler returned
// before the Read did), and bounds what net/http reads of an unfinished
// body after the handler (HTTP/1.1 discards up to 256 KiB to keep the
// connection) by what is left of the body's time.
func (b *timedBody) done() (timedOut bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	if b.err == errBodyTimeout || !b.deadline.IsZero() && !time.Now().Before(b.deadline) {
		return true
	}
	if b.err != nil || b.unbounded || !b.deadline.IsZero() {
		return false
	}
	if left := b.left(); left > 0 {
		b.rc.SetReadDeadline(time.Now().Add(left))
	} else {
		b.rc.SetReadDeadline(time.Now())
	}
	return false
}
