package httpcarrier

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/post"
)

// responseWriter is the http.ResponseWriter of one fork. Informational
// responses go out as messages of their own; the final response is one
// message of head and body, sent in parts of up to partSize bytes as the
// handler writes or flushes.
type responseWriter struct {
	f      *carrier.Carrier
	req    *http.Request
	ctx    context.Context
	log    *slog.Logger
	header http.Header

	mu       sync.Mutex
	status   int // the final status, once written
	declared int64
	trailers []string // names declared in the Trailer field
	buf      []byte
	mw       *carrier.MessageWriter // once the head was sent
	written  int64
	err      error // the response could not be sent

	tunnel   *headMsg // an Upgrade or CONNECT request: what came after its head
	hijacked bool
	srvCtx   context.Context // ends with the Server: bounds a hijacked stream
}

var (
	_ http.Flusher  = (*responseWriter)(nil)
	_ http.Hijacker = (*responseWriter)(nil)
)

// errHijacked tells serveFork that the handler took the fork.
var errHijacked = errors.New("httpcarrier: fork hijacked")

// Hijack hands the fork of an Upgrade or CONNECT request to the handler
// as a byte stream: reads return the client's bytes after the request
// head, and what the handler writes is the response message, starting
// with the response head (101, or 2xx to CONNECT) as on an HTTP/1.1
// connection. Closing the connection ends the message and the fork.
// Other requests get an error wrapping post.ErrNotSupported.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.hijacked:
		return nil, nil, http.ErrHijacked
	case w.tunnel == nil:
		return nil, nil, errNotTunnel
	case w.status != 0 || w.mw != nil:
		return nil, nil, post.Errorf(post.ErrInvalid, "httpcarrier: Hijack after the response started")
	}
	w.hijacked = true
	// The stream outlives the request, not the Server.
	t := newTunnel(w.srvCtx, w.f, w.tunnel.rest, w.tunnel.end, nil, nil, nil)
	return t, bufio.NewReadWriter(bufio.NewReader(t), bufio.NewWriter(t)), nil
}

func (w *responseWriter) isHijacked() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hijacked
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeHeader(code)
}

func (w *responseWriter) writeHeader(code int) {
	if w.hijacked {
		w.log.Debug("WriteHeader after Hijack", "code", code)
		return
	}
	if w.status != 0 {
		w.log.Debug("superfluous WriteHeader", "code", code)
		return
	}
	if code < 100 || code > 999 {
		w.log.Error("invalid WriteHeader code", "code", code)
		code = http.StatusInternalServerError
	}
	if code == http.StatusSwitchingProtocols {
		w.log.Error("protocol upgrades are not carried")
		code = http.StatusNotImplemented
	}
	if code < 200 {
		h, err := cleanHeader(w.header)
		if err == nil {
			err = w.f.Send(w.ctx, responseHead(code, h))
		}
		if err != nil {
			w.log.Debug("informational response not sent", "err", err)
		}
		return
	}
	w.status = code
	w.declared = -1
	if v := w.header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			w.log.Error("bad Content-Length from handler", "value", v)
			w.header.Del("Content-Length")
		}
	}
	for _, v := range w.header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); validFieldName(k) && !forbiddenTrailer(k) {
				w.trailers = append(w.trailers, k)
			}
		}
	}
}

// bodyAllowed reports whether the response may carry a body.
func (w *responseWriter) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified && w.req.Method != http.MethodHead
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.bodyAllowed() {
		if w.req.Method == http.MethodHead {
			w.written += int64(len(p))
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), partSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		w.written += int64(k)
		if len(w.buf) >= partSize {
			if err := w.send(false); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// send sends the buffered part; last completes the response message
// (and lets the head declare the length of a body that fits one part).
func (w *responseWriter) send(last bool) error {
	if w.err != nil {
		return w.err
	}
	out := w.buf
	if w.mw == nil {
		if last {
			w.trailers = append(w.trailers, w.prefixTrailers()...)
		}
		if _, ok := w.header["Content-Type"]; !ok && len(w.buf) > 0 && w.bodyAllowed() {
			w.header.Set("Content-Type", http.DetectContentType(w.buf))
		}
		length := w.declared
		switch {
		case length >= 0 || !last || len(w.trailers) > 0:
		case w.bodyAllowed():
			length = int64(len(w.buf))
		case w.req.Method == http.MethodHead && w.written > 0:
			length = w.written
		}
		h, err := cleanHeader(w.header)
		if err != nil {
			w.err = err
			return err
		}
		if length >= 0 {
			h.Set("Content-Length", strconv.FormatInt(length, 10))
		}
		for _, k := range w.trailers {
			h.Del(k) // their values go in the trailer message
		}
		if len(w.trailers) > 0 {
			h.Set("Trailer", strings.Join(w.trailers, ", "))
		}
		out = append(responseHead(w.status, h), w.buf...)
		if last {
			w.buf = w.buf[:0]
			w.err = w.f.SendMsg(w.ctx, &post.Message{Content: out})
			return w.err
		}
		if w.mw, w.err = w.f.NewMessageWriter(w.ctx, post.Properties{}); w.err != nil {
			return w.err
		}
	}
	var err error
	switch {
	case last:
		_, err = w.mw.WriteLast(out) // the end travels with the last bytes
	case len(out) > 0:
		_, err = w.mw.Write(out)
	}
	w.buf = w.buf[:0]
	w.err = err
	return err
}

// Flush sends the head and what the handler wrote so far.
func (w *responseWriter) Flush() { w.FlushError() }

// FlushError is Flush returning its error (see http.ResponseController).
func (w *responseWriter) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	return w.send(false)
}

// finish completes the response after the handler returned: the end of
// the message, then the trailers if the handler set any.
func (w *responseWriter) finish() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if w.declared >= 0 && w.written < w.declared && w.bodyAllowed() {
		if w.mw != nil {
			w.mw.Abort()
		}
		return post.Errorf(post.ErrInvalid, "handler wrote %d of %d declared bytes", w.written, w.declared)
	}
	if err := w.send(true); err != nil {
		return err
	}
	if extra := w.prefixTrailers(); len(extra) > 0 && !slices.Contains(w.trailers, extra[0]) {
		w.log.Warn("trailers not declared before the head was sent are dropped; name them in the Trailer header", "trailers", extra)
	}
	if len(w.trailers) == 0 {
		return nil
	}
	// The head declared trailers: the client waits for the message, even
	// when the handler set no values.
	tr := http.Header{}
	for _, k := range w.trailers {
		if vs := w.header[k]; len(vs) > 0 {
			tr[k] = vs
		}
		if vs := w.header[http.TrailerPrefix+k]; len(vs) > 0 {
			tr[k] = vs
		}
	}
	clean, err := cleanHeader(tr)
	if err != nil {
		return err
	}
	for k := range clean {
		if forbiddenTrailer(k) {
			delete(clean, k)
		}
	}
	return w.f.Send(w.ctx, trailerBlock(clean))
}

// prefixTrailers returns the names the handler set under
// http.TrailerPrefix.
func (w *responseWriter) prefixTrailers() []string {
	var names []string
	for k := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && name != "" && validFieldName(name) {
			names = append(names, http.CanonicalHeaderKey(name))
		}
	}
	slices.Sort(names)
	return names
}
