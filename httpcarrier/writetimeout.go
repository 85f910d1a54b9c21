package httpcarrier

import (
	"net/http"
	"time"
)

// DefaultWriteTimeout is WriteTimeout's default bound on each wait to
// hand response bytes to the client.
const DefaultWriteTimeout = 30 * time.Second

// WriteTimeout is an http.Handler for an ordinary http.Server in front of
// a Transport (a front gateway): it bounds each wait to write the
// response to the client, which http.Server leaves open unless its
// WriteTimeout bounds the whole response (and so every honest large
// download). Without it a client that asks for a large response and
// never reads it (a slow-read attack) holds its connection, its request
// slot, its fork and the origin's request for as long as it keeps the
// connection open: TCP keeps a zero window for ever.
//
// Each Write, WriteHeader and Flush of the response gets Timeout to
// complete; time the handler spends elsewhere (waiting for its origin)
// does not count, so a long poll or a slow origin is not cut. A write
// over its time fails; a ReverseProxy then aborts the request and the
// connection is closed. CONNECT and Upgrade requests pass untouched
// (a tunnel has its own idle timeout). As with BodyTimeout, ServeHTTP
// must get the server's own ResponseWriter, or one that unwraps to it.
// A zero WriteTimeout bounds writes by DefaultWriteTimeout.
type WriteTimeout struct {
	Handler http.Handler
	// Timeout bounds each write; zero means DefaultWriteTimeout,
	// negative no bound.
	Timeout time.Duration
}

func (h *WriteTimeout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = DefaultWriteTimeout
	}
	if timeout < 0 || r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" {
		h.Handler.ServeHTTP(w, r)
		return
	}
	tw := &timedWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
	tw.rc.SetWriteDeadline(time.Time{}) // none left from an earlier request
	h.Handler.ServeHTTP(tw, r)
	if r.ProtoMajor == 1 {
		// What net/http writes after the handler (the buffered rest,
		// the chunked trailer) is bounded too; the next request on
		// the connection starts without it (above).
		tw.rc.SetWriteDeadline(time.Now().Add(timeout))
	}
}

// timedWriter gives each write of the response a deadline and clears it
// after: HTTP/2 resets a stream whose deadline passes, whether or not a
// write waits.
type timedWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *timedWriter) bound() { w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }
func (w *timedWriter) clear() { w.rc.SetWriteDeadline(time.Time{}) }

func (w *timedWriter) WriteHeader(code int) {
	w.bound()
	defer w.clear()
	w.ResponseWriter.WriteHeader(code)
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.bound()
	defer w.clear()
	return w.ResponseWriter.Write(p)
}

// FlushError flushes within the timeout (http.ResponseController calls
// it first).
func (w *timedWriter) FlushError() error {
	w.bound()
	defer w.clear()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
