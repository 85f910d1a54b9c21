package httpcarrier

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"github.com/postsockets/postsockets/post"
)

// Root-carrier messages. The client's first message on a root Carrier is
// preface; the server answers with slotsMsg, how many requests it serves
// at once on the root, and says nothing more until it shuts down, when it
// sends goAway.
var (
	preface = []byte("postsockets-http/1")
	goAway  = []byte("goaway")
)

// slotsPrefix starts the server's slots message: "slots 256".
const slotsPrefix = "slots "

// slotsMsg is the message announcing n slots a root.
func slotsMsg(n int) []byte {
	return strconv.AppendInt([]byte(slotsPrefix), int64(n), 10)
}

// parseSlots returns the slots a slots message announces; ok is false
// for any other message or an announcement out of range.
func parseSlots(m []byte) (n int, ok bool) {
	v, found := strings.CutPrefix(string(m), slotsPrefix)
	if !found {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, false
	}
	return min(n, maxSlots), true
}

// DefaultMaxHeaderBytes bounds a head or a trailer block when the
// configuration leaves it zero.
const DefaultMaxHeaderBytes = http.DefaultMaxHeaderBytes

// errHeadTooLarge reports a head over the limit.
var errHeadTooLarge = post.Errorf(post.ErrMessageTooLarge, "http head over the limit")

// headEnd returns the length of the head at the start of b (through the
// blank line), or -1 if b does not hold a whole head yet. from is where
// the previous search stopped, so that a growing buffer is scanned once.
func headEnd(b []byte, from int) int {
	from = max(from-3, 0)
	if i := bytes.Index(b[from:], []byte("\r\n\r\n")); i >= 0 {
		return from + i + 4
	}
	return -1
}

// hopHeaders are connection-specific fields: a fork is not a connection,
// and the end of a message replaces transfer framing, so none of them is
// carried. Fields named in Connection are dropped too.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
	"Upgrade", "Te", "Trailer",
}

// cleanHeader returns a copy of h without hop-by-hop fields, Host and
// Content-Length (which the caller writes itself), and with only valid
// field names and values.
func cleanHeader(h http.Header) (http.Header, error) {
	out := make(http.Header, len(h))
	drop := map[string]bool{"Host": true, "Content-Length": true}
	for _, k := range hopHeaders {
		drop[k] = true
	}
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				drop[http.CanonicalHeaderKey(f)] = true
			}
		}
	}
	for k, vs := range h {
		if drop[http.CanonicalHeaderKey(k)] || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		if !validFieldName(k) {
			return nil, post.Errorf(post.ErrInvalid, "invalid header field name %q", k)
		}
		for _, v := range vs {
			if !validFieldValue(v) {
				return nil, post.Errorf(post.ErrInvalid, "invalid value for header field %q", k)
			}
		}
		out[k] = vs
	}
	return out, nil
}

// trailerNames returns the canonical, sorted names of t.
func trailerNames(t http.Header) []string {
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, http.CanonicalHeaderKey(k))
	}
	slices.Sort(names)
	return names
}

// appendRequestHead writes the head of req: the request line in origin
// form, Host, the cleaned header fields, Content-Length if known and the
// declared trailer names.
func appendRequestHead(b []byte, req *http.Request) ([]byte, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validMethod(method) {
		return nil, post.Errorf(post.ErrInvalid, "invalid method %q", method)
	}
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	if host == "" || !validHost(host) {
		return nil, post.Errorf(post.ErrInvalid, "invalid host %q", host)
	}
	uri := req.URL.RequestURI()
	if method == http.MethodConnect {
		uri = host // authority form
	}
	if strings.ContainsAny(uri, " \r\n") {
		return nil, post.Errorf(post.ErrInvalid, "invalid request target %q", uri)
	}
	h, err := cleanHeader(req.Header)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(b)
	fmt.Fprintf(&buf, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, uri, host)
	switch {
	case req.ContentLength > 0:
		h.Set("Content-Length", strconv.FormatInt(req.ContentLength, 10))
	case noBody(req.Body) && (method == "POST" || method == "PUT" || method == "PATCH"):
		h.Set("Content-Length", "0")
	}
	if len(req.Trailer) > 0 {
		h.Set("Trailer", strings.Join(trailerNames(req.Trailer), ", "))
	}
	if up := upgradeProtocol(req.Header); up != "" && tunnelRequest(req) && method != http.MethodConnect {
		if !validFieldValue(up) {
			return nil, post.Errorf(post.ErrInvalid, "invalid value for header field \"Upgrade\"")
		}
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", up)
	}
	if err := h.Write(&buf); err != nil {
		return nil, err
	}
	buf.WriteString("\r\n")
	return buf.Bytes(), nil
}

func noBody(b any) bool { return b == nil || b == http.NoBody }

func validMethod(m string) bool {
	return m != "" && strings.IndexFunc(m, func(r rune) bool { return r >= 0x80 || !isToken(byte(r)) }) < 0
}

// responseHead writes a status line and h, which the caller cleaned.
func responseHead(code int, h http.Header) []byte {
	var buf bytes.Buffer
	text := http.StatusText(code)
	if text == "" {
		text = "status " + strconv.Itoa(code)
	}
	fmt.Fprintf(&buf, "HTTP/1.1 %03d %s\r\n", code, text)
	h.Write(&buf)
	buf.WriteString("\r\n")
	return buf.Bytes()
}

// trailerBlock writes the trailer message for t.
func trailerBlock(t http.Header) []byte {
	var buf bytes.Buffer
	t.Write(&buf)
	buf.WriteString("\r\n")
	return buf.Bytes()
}

// forbiddenTrailer names fields that cannot be trailers (RFC 9110 6.5.1):
// framing, routing and the fields this mapping uses.
func forbiddenTrailer(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Trailer", "Host", "Content-Type",
		"Content-Encoding", "Content-Range", "Te", "Connection", "Keep-Alive", "Upgrade":
		return true
	}
	return false
}

// declaredTrailers moves the names in h's Trailer field into a new
// trailer map (values unset), as net/http does for chunked messages.
func declaredTrailers(h http.Header) (http.Header, error) {
	vs := h["Trailer"]
	if len(vs) == 0 {
		return nil, nil
	}
	t := http.Header{}
	for _, v := range vs {
		for k := range strings.SplitSeq(v, ",") {
			k = http.CanonicalHeaderKey(textproto.TrimString(k))
			if k == "" {
				continue
			}
			if !validFieldName(k) || forbiddenTrailer(k) {
				return nil, post.Errorf(post.ErrMalformed, "bad trailer name %q", k)
			}
			t[k] = nil
		}
	}
	delete(h, "Trailer")
	if len(t) == 0 {
		return nil, nil
	}
	return t, nil
}

// checkFraming rejects transfer codings, which the end of a message
// replaces, and returns the declared Content-Length or -1.
func checkFraming(h http.Header) (int64, error) {
	if _, ok := h["Transfer-Encoding"]; ok {
		return 0, post.Errorf(post.ErrMalformed, "transfer-encoding is not used over carriers")
	}
	vs := h["Content-Length"]
	if len(vs) == 0 {
		return -1, nil
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return 0, post.Errorf(post.ErrMalformed, "conflicting content-length")
		}
	}
	n, err := strconv.ParseInt(textproto.TrimString(vs[0]), 10, 64)
	if err != nil || n < 0 {
		return 0, post.Errorf(post.ErrMalformed, "bad content-length %q", vs[0])
	}
	return n, nil
}

// parseRequestHead parses a request head with net/http's parser. The
// body, ContentLength and Trailer are the caller's to set from the
// message; ContentLength is the declared length or -1.
func parseRequestHead(head []byte) (*http.Request, error) {
	if err := precheckFraming(head); err != nil {
		return nil, err
	}
	req, err := http.ReadRequest(headReader(head))
	if err != nil {
		return nil, post.Errorf(post.ErrMalformed, "request head: %v", err)
	}
	if req.ProtoMajor != 1 {
		return nil, post.Errorf(post.ErrMalformed, "protocol %q", req.Proto)
	}
	if req.ContentLength, err = checkFraming(req.Header); err != nil {
		return nil, err
	}
	if req.Trailer, err = declaredTrailers(req.Header); err != nil {
		return nil, err
	}
	req.Close = false
	req.Body = http.NoBody
	return req, nil
}

// parseResponseHead parses a response head to req with net/http's
// parser; as for parseRequestHead, the body is the caller's.
func parseResponseHead(head []byte, req *http.Request) (*http.Response, error) {
	if err := precheckFraming(head); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(headReader(head), req)
	if err != nil {
		return nil, post.Errorf(post.ErrMalformed, "response head: %v", err)
	}
	if resp.ProtoMajor != 1 || resp.StatusCode < 100 || resp.StatusCode > 999 {
		return nil, post.Errorf(post.ErrMalformed, "status line %q %d", resp.Proto, resp.StatusCode)
	}
	if resp.ContentLength, err = checkFraming(resp.Header); err != nil {
		return nil, err
	}
	if resp.Trailer, err = declaredTrailers(resp.Header); err != nil {
		return nil, err
	}
	resp.Close = false
	resp.Uncompressed = false
	resp.TransferEncoding = nil
	return resp, nil
}

// headReader reads head through a buffer no larger than it: net/http's
// default of 4 KiB, allocated and cleared for each head, was the largest
// allocation of a small request and its response.
func headReader(head []byte) *bufio.Reader {
	return bufio.NewReaderSize(bytes.NewReader(head), min(len(head), 4096))
}

// precheckFraming rejects a head whose framing fields net/http would
// interpret before checkFraming sees them: it removes Transfer-Encoding
// (and with it Content-Length) from the header it returns. Only a head
// that names the field somewhere, in any case, is parsed for it.
func precheckFraming(head []byte) error {
	if !containsFold(head, "transfer-encoding") {
		return nil // net/http keeps Content-Length as sent; checkFraming sees it
	}
	_, err := checkFraming(headerOnly(head))
	return err
}

// containsFold reports whether b contains the lower-case ASCII string s,
// ignoring the case of ASCII letters in b.
func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		j := 0
		for j < len(s) && lowerASCII(b[i+j]) == s[j] {
			j++
		}
		if j == len(s) {
			return true
		}
	}
	return false
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// headerOnly parses the field lines of a head loosely, to look at the
// framing fields before net/http interprets them.
func headerOnly(head []byte) http.Header {
	r := textproto.NewReader(headReader(head))
	if _, err := r.ReadLine(); err != nil {
		return nil
	}
	h, _ := r.ReadMIMEHeader()
	return http.Header(h)
}

// parseTrailers parses a trailer message.
func parseTrailers(b []byte) (http.Header, error) {
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return nil, post.Errorf(post.ErrMalformed, "trailer block not terminated")
	}
	br := bufio.NewReader(bytes.NewReader(b))
	h, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil {
		return nil, post.Errorf(post.ErrMalformed, "trailers: %v", err)
	}
	if br.Buffered() > 0 {
		return nil, post.Errorf(post.ErrMalformed, "bytes after the trailer block")
	}
	for k := range h {
		if forbiddenTrailer(k) {
			return nil, post.Errorf(post.ErrMalformed, "field %q cannot be a trailer", k)
		}
	}
	return http.Header(h), nil
}

// isToken reports whether c is a tchar (RFC 9110 5.6.2).
func isToken(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isToken(k[i]) {
			return false
		}
	}
	return true
}

// validFieldValue rejects control characters other than horizontal tab.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost rejects characters that cannot be in an authority.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"#/<>?@\\^`{|}", c) >= 0 {
			return false
		}
	}
	return true
}
