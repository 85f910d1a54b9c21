package framer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/postsockets/postsockets/post"
)

// HTTP frames HTTP/1.1 (and 1.0) messages: one message is one request or
// one response, exactly as on the wire — the start line, the fields, the
// blank line and the body with its own framing (Content-Length, chunked
// with its trailer section, or up to the end of the stream), so that
// net/http's ReadRequest and ReadResponse parse it unchanged. Each 1xx
// response is a message of its own. The writer sends what it is given:
// the application writes whole HTTP messages, one per message.
//
// A response's length can depend on its request (HEAD, CONNECT), so
// stacks that honour PairFramer (psi/raw) give the reader the methods of
// the requests the writer sent, in order. After a 101 or a 2xx to CONNECT
// the stream is no longer HTTP: what follows is one last message that
// ends with the stream.
//
// The reader bounds a head, each chunk-size line, a trailer section and
// the empty lines before a request by MaxHeaderBytes (zero means 1 MiB); it refuses obsolete line folding,
// bare LF, a message with both Transfer-Encoding and Content-Length, and
// conflicting Content-Length values, with errors wrapping
// post.ErrMalformed. Errors from the stream other than io.EOF leave the
// framing intact, so a read that timed out may be retried.
type HTTP struct {
	MaxHeaderBytes int
}

// PairFramer is implemented by framings whose reader must know what the
// writer of the same stream sent; a stack that has both ends of a stream
// calls NewPair instead of NewReader and NewWriter.
type PairFramer interface {
	Framer
	NewPair(r io.Reader, w io.Writer, maxMessage int64) (MessageReader, MessageWriter)
}

var _ PairFramer = HTTP{}

// Name returns "http/1.1".
func (HTTP) Name() string { return "http/1.1" }

func (h HTTP) maxHead() int {
	if h.MaxHeaderBytes > 0 {
		return h.MaxHeaderBytes
	}
	return 1 << 20
}

// NewReader returns a reader of HTTP messages that does not know the
// requests sent: a response is taken to answer a GET.
func (h HTTP) NewReader(r io.Reader, maxMessage int64) MessageReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 32<<10)
	}
	return &httpReader{r: br, maxHead: h.maxHead()}
}

// NewWriter returns a writer of HTTP messages.
func (h HTTP) NewWriter(w io.Writer) MessageWriter {
	return &httpWriter{w: bufio.NewWriterSize(w, 32<<10)}
}

// NewPair returns a reader and writer of one stream: the reader learns
// the method of each request the writer sent.
func (h HTTP) NewPair(r io.Reader, w io.Writer, maxMessage int64) (MessageReader, MessageWriter) {
	q := &methodQueue{}
	hr := h.NewReader(r, maxMessage).(*httpReader)
	hw := h.NewWriter(w).(*httpWriter)
	hr.sent, hw.sent = q, q
	return hr, hw
}

// methodQueue holds the methods of requests sent and not yet answered.
type methodQueue struct {
	mu sync.Mutex
	m  []string
}

func (q *methodQueue) push(m string) {
	q.mu.Lock()
	q.m = append(q.m, m)
	q.mu.Unlock()
}

func (q *methodQueue) pop() string {
	if q == nil {
		return ""
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.m) == 0 {
		return ""
	}
	m := q.m[0]
	q.m = q.m[1:]
	return m
}

type httpWriter struct {
	w      *bufio.Writer
	sent   *methodQueue
	inMsg  bool
	method []byte // the start of the message, until its first space
	noted  bool
}

func (w *httpWriter) WriteMessage(p []byte, end bool) error {
	if w.sent != nil && !w.noted {
		// Note the method once the start line's first space is seen.
		i := bytes.IndexByte(p, ' ')
		if i < 0 {
			i = len(p)
		}
		w.method = append(w.method, p[:min(i, 32-len(w.method), len(p))]...)
		if i < len(p) || len(w.method) >= 32 || end {
			if len(w.method) > 0 && !bytes.HasPrefix(w.method, []byte("HTTP/")) { // a response is not a request
				w.sent.push(string(w.method))
			}
			w.noted = true
		}
	}
	if _, err := w.w.Write(p); err != nil {
		return err
	}
	if end {
		w.method, w.noted = w.method[:0], false
	}
	return nil
}

func (w *httpWriter) Flush() error { return w.w.Flush() }

// reader states
const (
	hsIdle      = iota // between messages
	hsFixed            // remain bytes of body
	hsChunkSize        // a chunk-size line
	hsChunkData        // remain bytes of chunk data
	hsChunkEnd         // the CRLF after chunk data
	hsTrailer          // trailer section lines
	hsToEOF            // the body runs to the end of the stream
)

type httpReader struct {
	r       *bufio.Reader
	maxHead int
	sent    *methodQueue

	st       int
	open     bool   // a message has started and not ended
	pend     []byte // bytes of the message parsed and not yet delivered
	acc      []byte // a head or line being read
	remain   int64
	section  int  // bytes of the last chunk line and trailers so far
	blank    int  // bytes of empty lines skipped before a request line
	switched bool // the stream is no longer HTTP
	err      error
}

var (
	errHTTPEOF = fmt.Errorf("%w: http: stream ended inside a message", post.ErrMalformed)
	crlf       = []byte("\r\n")
)

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: http: %s", post.ErrMalformed, fmt.Sprintf(format, a...))
}

func (h *httpReader) ReadMessage(p []byte) (int, bool, error) {
	if h.err != nil {
		return 0, false, h.err
	}
	for {
		if len(h.pend) > 0 {
			n := copy(p, h.pend)
			h.pend = h.pend[n:]
			if len(h.pend) == 0 && h.st == hsIdle {
				h.open = false
				return n, true, nil
			}
			return n, false, nil
		}
		if len(p) == 0 {
			return 0, false, nil
		}
		var err error
		switch h.st {
		case hsIdle:
			err = h.readHead()
		case hsFixed, hsChunkData:
			return h.readBody(p)
		case hsToEOF:
			n, err := h.r.Read(p)
			if err == io.EOF {
				h.st, h.open, h.err = hsIdle, false, io.EOF
				return n, true, nil
			}
			return n, false, err
		case hsChunkSize:
			err = h.readChunkSize()
		case hsChunkEnd:
			err = h.readChunkEnd()
		case hsTrailer:
			err = h.readTrailer()
		}
		if err != nil {
			return 0, false, h.fail(err)
		}
	}
}

// fail keeps transient errors retryable and makes the others sticky.
func (h *httpReader) fail(err error) error {
	switch {
	case err == io.EOF && !h.open && len(h.acc) == 0:
		h.err = io.EOF
	case err == io.EOF:
		h.err = errHTTPEOF
	case errors.Is(err, post.ErrMalformed):
		h.err = err
	default:
		return err // possibly transient, such as a deadline
	}
	return h.err
}

// readLine reads a line, within limit bytes, keeping what it read in
// h.acc across errors, so that a retry goes on where it stopped.
func (h *httpReader) readLine(limit int) ([]byte, error) {
	line, err := h.readLineInto(limit)
	if err != nil {
		return nil, err
	}
	h.acc = nil
	return line, nil
}

func (h *httpReader) readHead() error {
	if h.switched {
		if _, err := h.r.Peek(1); err != nil {
			return err // nothing after the switch: the stream just ends
		}
		h.st, h.open = hsToEOF, true
		return nil
	}
	if !h.open && len(h.acc) == 0 {
		// Empty lines before a request line are ignored (RFC 9112 2.2).
		for {
			b, err := h.r.Peek(2)
			if len(b) >= 1 && b[0] != '\r' {
				break
			}
			if err != nil {
				if len(b) == 1 && err == io.EOF {
					return malformed("stray CR")
				}
				return err
			}
			if b[1] != '\n' {
				return malformed("CR not followed by LF")
			}
			if h.blank += 2; h.blank > h.maxHead {
				return malformed("over %d bytes of empty lines", h.maxHead)
			}
			h.r.Discard(2)
		}
		h.open, h.blank = true, 0
	}
	for {
		start := len(h.acc)
		if _, err := h.readLineInto(h.maxHead); err != nil {
			return err
		}
		if len(h.acc)-start == 2 { // the blank line
			break
		}
	}
	head := h.acc
	h.acc = nil
	if err := h.parseHead(head); err != nil {
		return err
	}
	h.pend = head
	return nil
}

// readLineInto is readLine that leaves the line at the end of h.acc.
func (h *httpReader) readLineInto(limit int) ([]byte, error) {
	for {
		from := len(h.acc)
		b, err := h.r.ReadSlice('\n')
		if cap(h.acc)-len(h.acc) < len(b) {
			// Double, up to the limit: append's gentler growth of large
			// slices would allocate five times a long head.
			h.acc = slices.Grow(h.acc, max(len(b), min(len(h.acc), limit)))
		}
		h.acc = append(h.acc, b...)
		if len(h.acc) > limit {
			return nil, malformed("head over %d bytes", limit)
		}
		switch {
		case err == nil:
			line := h.acc[from:]
			if len(h.acc) < 2 || h.acc[len(h.acc)-2] != '\r' {
				return nil, malformed("bare LF")
			}
			return line, nil
		case err == bufio.ErrBufferFull:
			continue
		default:
			return nil, err
		}
	}
}

// parseHead checks a head and sets the state for its body.
func (h *httpReader) parseHead(head []byte) error {
	// Lines are taken one at a time: a head of tiny fields must not
	// cost a slice header per field on top of its bytes.
	start, fields, _ := bytes.Cut(head[:len(head)-4], crlf)
	var request bool
	var status int
	var method string
	var http10 bool
	if v, rest, ok := bytes.Cut(start, []byte(" ")); ok && bytes.HasPrefix(v, []byte("HTTP/")) {
		if !validVersion(v) {
			return malformed("bad version %q", v)
		}
		http10 = string(v) == "HTTP/1.0"
		code, _, _ := bytes.Cut(rest, []byte(" "))
		if len(code) != 3 || code[0] < '1' || code[0] > '9' || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
			return malformed("bad status %q", code)
		}
		status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
		if bytes.ContainsFunc(rest, isCTL) {
			return malformed("control character in status line")
		}
	} else {
		request = true
		parts := bytes.Split(start, []byte(" "))
		if len(parts) != 3 || !isToken(parts[0]) || len(parts[1]) == 0 || bytes.ContainsFunc(parts[1], isCTL) || !validVersion(parts[2]) {
			return malformed("bad request line %q", start[:min(len(start), 64)])
		}
		http10 = string(parts[2]) == "HTTP/1.0"
	}
	length := int64(-1)
	var te [][]byte
	for len(fields) > 0 {
		var l []byte
		l, fields, _ = bytes.Cut(fields, crlf)
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || !isToken(name) {
			return malformed("bad field line %q", l[:min(len(l), 64)])
		}
		value = bytes.Trim(value, " \t")
		if bytes.ContainsFunc(value, func(r rune) bool { return r != '\t' && isCTL(r) }) {
			return malformed("control character in field %q", name)
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			for v := range bytes.SplitSeq(value, []byte(",")) {
				v = bytes.Trim(v, " \t")
				n, err := strconv.ParseInt(string(v), 10, 64)
				if err != nil || n < 0 || v[0] == '+' || v[0] == '-' {
					return malformed("bad Content-Length %q", value)
				}
				if length >= 0 && n != length {
					return malformed("conflicting Content-Length")
				}
				length = n
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			for v := range bytes.SplitSeq(value, []byte(",")) {
				if v = bytes.Trim(v, " \t"); len(v) > 0 {
					te = append(te, v)
				}
			}
		}
	}
	if !request && h.sent != nil && (status >= 200 || status == 101) {
		method = h.sent.pop()
	}
	switch {
	case len(te) > 0 && length >= 0:
		return malformed("both Transfer-Encoding and Content-Length")
	case len(te) > 0 && http10:
		return malformed("Transfer-Encoding in HTTP/1.0")
	}
	chunked := len(te) > 0 && bytes.EqualFold(te[len(te)-1], []byte("chunked"))
	for _, c := range te[:max(len(te)-1, 0)] {
		if bytes.EqualFold(c, []byte("chunked")) {
			return malformed("chunked is not the last transfer coding")
		}
	}
	h.st = hsIdle
	switch {
	case !request && (status == 101 || method == "CONNECT" && status/100 == 2):
		h.switched = true
	case !request && (status < 200 || status == 204 || status == 304 || method == "HEAD"):
	case chunked:
		h.st, h.section = hsChunkSize, 0
	case len(te) > 0 && request:
		return malformed("request body without chunked framing")
	case len(te) > 0:
		h.st = hsToEOF
	case length > 0:
		h.st, h.remain = hsFixed, length
	case length == 0 || request:
	default:
		h.st = hsToEOF // a response delimited by the end of the stream
	}
	return nil
}

func validVersion(v []byte) bool {
	return len(v) == 8 && string(v[:7]) == "HTTP/1." && v[7] >= '0' && v[7] <= '9'
}

func isCTL(r rune) bool { return r < ' ' || r == 0x7f }

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// readBody delivers bytes of a fixed-length body or of a chunk.
func (h *httpReader) readBody(p []byte) (int, bool, error) {
	k := int64(len(p))
	if k > h.remain {
		k = h.remain
	}
	n, err := h.r.Read(p[:k])
	h.remain -= int64(n)
	if h.remain == 0 {
		if h.st == hsChunkData {
			h.st = hsChunkEnd
			return n, false, nil
		}
		h.st, h.open = hsIdle, false
		return n, true, nil
	}
	if err != nil && n == 0 {
		return 0, false, h.fail(err) // with bytes, the error comes again next time
	}
	return n, false, nil
}

// readChunkSize reads a chunk-size line, bounded by the head's size. The
// lines of a body's chunks are not added up: a stream of small chunks is
// a long body, not a long head. The last chunk's line counts towards the
// trailer section's bound.
func (h *httpReader) readChunkSize() error {
	line, err := h.readLine(h.maxHead)
	if err != nil {
		return err
	}
	h.section = len(line)
	size, _, _ := bytes.Cut(line[:len(line)-2], []byte(";"))
	size = bytes.TrimRight(size, " \t")
	if len(size) == 0 || len(size) > 15 {
		return malformed("bad chunk size %q", size)
	}
	n, err := strconv.ParseInt(string(size), 16, 64)
	if err != nil || n < 0 || size[0] == '+' || size[0] == '-' {
		return malformed("bad chunk size %q", size)
	}
	if bytes.ContainsFunc(line[:len(line)-2], func(r rune) bool { return r != '\t' && isCTL(r) }) {
		return malformed("control character in chunk extension")
	}
	h.pend = line
	if n == 0 {
		h.st = hsTrailer
	} else {
		h.st, h.remain = hsChunkData, n
	}
	return nil
}

func (h *httpReader) readChunkEnd() error {
	line, err := h.readLine(2)
	if err != nil {
		if errors.Is(err, post.ErrMalformed) {
			return malformed("chunk data not followed by CRLF")
		}
		return err
	}
	h.pend = line
	h.st = hsChunkSize
	return nil
}

func (h *httpReader) readTrailer() error {
	line, err := h.readLine(h.maxHead - h.section)
	if err != nil {
		return err
	}
	h.section += len(line)
	if len(line) > 2 {
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok || !isToken(name) {
			return malformed("bad trailer line")
		}
	} else {
		h.st = hsIdle // the blank line ends the message
	}
	h.pend = line
	return nil
}
