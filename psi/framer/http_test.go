package framer_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/framer"
)

// readHTTP reads every message from r in parts of at most size bytes,
// until an error; io.EOF at a message boundary gives a nil error.
func readHTTP(r framer.MessageReader, size int) ([]string, error) {
	var msgs []string
	var cur []byte
	buf := make([]byte, size)
	for range 1 << 20 {
		n, end, err := r.ReadMessage(buf)
		cur = append(cur, buf[:n]...)
		if end {
			msgs = append(msgs, string(cur))
			cur = nil
		}
		if err == io.EOF && len(cur) == 0 {
			return msgs, nil
		}
		if err != nil {
			return msgs, err
		}
	}
	return msgs, errors.New("reader does not progress")
}

func TestHTTPResponses(t *testing.T) {
	msgs := []string{
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: done\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", // answers HEAD
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
		"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nthe body runs to the end of the stream",
	}
	methods := []string{"GET", "GET", "GET", "HEAD", "GET", "GET", "GET"}
	for _, size := range []int{1, 3, 4096} {
		var out bytes.Buffer
		r, w := framer.HTTP{}.NewPair(strings.NewReader(strings.Join(msgs, "")), &out, 0)
		for _, m := range methods {
			if err := w.WriteMessage([]byte(m+" / HTTP/1.1\r\nHost: x\r\n\r\n"), true); err != nil {
				t.Fatal(err)
			}
		}
		w.Flush()
		got, err := readHTTP(r, size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if strings.Join(got, "|") != strings.Join(msgs, "|") {
			t.Fatalf("size %d: got %q", size, got)
		}
		if !strings.HasPrefix(out.String(), "GET / HTTP/1.1\r\n") {
			t.Fatalf("writer sent %q", out.String())
		}
	}
	// Each message is one net/http parses.
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(msgs[2])), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "hello world" || resp.Trailer.Get("X-T") != "done" {
		t.Fatalf("chunked: %q %v", b, resp.Trailer)
	}
}

func TestHTTPRequestsAndSwitch(t *testing.T) {
	msgs := []string{
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	}
	// Empty lines before a request line are skipped.
	got, err := readHTTP(framer.HTTP{}.NewReader(strings.NewReader("\r\n"+strings.Join(msgs, "")), 0), 7)
	if err != nil || strings.Join(got, "|") != strings.Join(msgs, "|") {
		t.Fatalf("requests: %q %v", got, err)
	}
	// After 101 (or 2xx to CONNECT) the rest of the stream is one message.
	for _, tc := range []struct{ method, head string }{
		{"GET", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"},
		{"CONNECT", "HTTP/1.1 200 Connection established\r\n\r\n"},
	} {
		r, w := framer.HTTP{}.NewPair(strings.NewReader(tc.head), io.Discard, 0)
		w.WriteMessage([]byte(tc.method+" x:1 HTTP/1.1\r\n\r\n"), true)
		if got, err := readHTTP(r, 5); err != nil || len(got) != 1 {
			t.Fatalf("%s with nothing after the switch: %q %v", tc.method, got, err)
		}
		r, w = framer.HTTP{}.NewPair(strings.NewReader(tc.head+"raw bytes\r\n\n"), io.Discard, 0)
		w.WriteMessage([]byte(tc.method+" x:1 HTTP/1.1\r\n\r\n"), true)
		got, err := readHTTP(r, 5)
		if err != nil || len(got) != 2 || got[0] != tc.head || got[1] != "raw bytes\r\n\n" {
			t.Fatalf("%s: %q %v", tc.method, got, err)
		}
	}
}

func TestHTTPMalformed(t *testing.T) {
	for name, in := range map[string]string{
		"te and cl":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"conflicting cl":   "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
		"bad cl":           "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
		"bare lf":          "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
		"obs fold":         "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"space before :":   "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
		"bad chunk size":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"chunk without lf": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
		"eof in body":      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
		"eof in head":      "HTTP/1.1 200 OK\r\nX: y\r\n",
		"request gzip te":  "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
		"bad request line": "GET /a b HTTP/1.1\r\n\r\n",
		"bad version":      "GET / HTTP/2.0\r\n\r\n",
		"bad status":       "HTTP/1.1 2000 OK\r\n\r\n",
		"ctl in value":     "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
		"head too long":    "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n",
	} {
		_, err := readHTTP(framer.HTTP{MaxHeaderBytes: 1024}.NewReader(strings.NewReader(in), 0), 64)
		if !errors.Is(err, post.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzHTTPReader: the reader never panics, delivers no more than it was
// given, and finds the same messages whatever the size of the reads.
func FuzzHTTPReader(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\r\n\r\nHTTP/1.1 204 No\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 101 Switching\r\n\r\nanything",
		"HTTP/1.0 200 OK\r\n\r\nto the end",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h := framer.HTTP{MaxHeaderBytes: 4096}
		a, errA := readHTTP(h.NewReader(bytes.NewReader(data), 0), 1)
		b, errB := readHTTP(h.NewReader(bytes.NewReader(data), 4096), 4096)
		if strings.Join(a, "\x00|") != strings.Join(b, "\x00|") || (errA == nil) != (errB == nil) {
			t.Fatalf("reads of 1 and 4096 bytes differ: %q %v / %q %v", a, errA, b, errB)
		}
		total := 0
		for _, m := range a {
			total += len(m)
		}
		if total > len(data) {
			t.Fatalf("delivered %d bytes of %d", total, len(data))
		}
		if errA != nil && !errors.Is(errA, post.ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", errA)
		}
	})
}

// flaky returns its data a few bytes at a time, with an error that is
// not io.EOF between the pieces, as a read deadline gives.
type flaky struct {
	data []byte
	fail bool
}

var errFlaky = errors.New("timeout")

func (f *flaky) Read(p []byte) (int, error) {
	if f.fail = !f.fail; f.fail {
		return 0, errFlaky
	}
	if len(f.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 3)], f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestHTTPRetry: errors other than io.EOF leave the framing intact.
func TestHTTPRetry(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	r := framer.HTTP{}.NewReader(&flaky{data: []byte(in)}, 0)
	var got []byte
	buf := make([]byte, 16)
	for range 10000 {
		n, _, err := r.ReadMessage(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil && err != errFlaky {
			t.Fatal(err)
		}
	}
	if string(got) != in {
		t.Fatalf("got %q", got)
	}
}

// TestHTTPExhaustion: what a hostile peer sends to make the reader hold
// memory or spin. Each case either is refused with ErrMalformed within
// the head bound or is read through with bounded memory.
func TestHTTPExhaustion(t *testing.T) {
	const limit = 64 << 10
	h := framer.HTTP{MaxHeaderBytes: limit}
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	for name, in := range map[string]string{
		"blank lines forever":  strings.Repeat("\r\n", limit),
		"chunk-size line":      chunked + strings.Repeat("0", 2*limit) + "1\r\nx\r\n0\r\n\r\n",
		"chunk extension":      chunked + "1;" + strings.Repeat("a", 2*limit) + "\r\nx\r\n0\r\n\r\n",
		"trailer flood":        chunked + "0\r\n" + strings.Repeat("T: v\r\n", limit/4) + "\r\n",
		"field line unbounded": "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 2*limit),
	} {
		_, err := readHTTP(h.NewReader(strings.NewReader(in), 0), 4096)
		if !errors.Is(err, post.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}

	// A stream of small chunks longer than the head bound is a body, not
	// a head: it is read to its end (a server's event stream runs for
	// hours in chunks of a few bytes).
	var b strings.Builder
	b.WriteString(chunked)
	for range limit {
		b.WriteString("1\r\nx\r\n")
	}
	b.WriteString("0\r\n\r\n")
	msgs, err := readHTTP(h.NewReader(strings.NewReader(b.String()), 0), 4096)
	if err != nil || len(msgs) != 1 {
		t.Errorf("%d chunks of one byte: %d messages, %v", limit, len(msgs), err)
	}

	// A head of the most fields that fit: memory about the head's size,
	// not a slice header per field on top.
	head := "GET / HTTP/1.1\r\n" + strings.Repeat("a:\r\n", (1<<20-64)/4) + "\r\n"
	// TotalAlloc counts every goroutine's allocations: the least of three
	// reads is this one's.
	least := ^uint64(0)
	for range 3 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := framer.HTTP{}.NewReader(strings.NewReader(head), 0)
		buf := make([]byte, 64<<10)
		var got int
		for {
			n, end, err := r.ReadMessage(buf)
			if got += n; err != nil || end {
				if err != nil || got != len(head) {
					t.Fatalf("a head of %d fields: %d bytes of %d, %v", (1<<20-64)/4, got, len(head), err)
				}
				break
			}
		}
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	// The reader's buffer and its accumulation of the head.
	if least > 5*uint64(len(head)) {
		t.Errorf("a %d-byte head of %d fields allocated %d bytes", len(head), (1<<20-64)/4, least)
	}

	// 1xx responses are messages of their own: each is delivered, none
	// is held.
	b.Reset()
	for range 10000 {
		b.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
	}
	msgs, err = readHTTP(h.NewReader(strings.NewReader(b.String()), 0), 4096)
	if err != nil || len(msgs) != 10000 {
		t.Errorf("10,000 1xx: %d messages, %v", len(msgs), err)
	}
}
