package httpcarrier

import (
	"bytes"
	"net/http"
	"testing"
)

// FuzzHeads feeds arbitrary bytes to the head and trailer decoders: they
// return a value or an error, never panic, and a head they accept is
// written back into one they accept again.
func FuzzHeads(f *testing.F) {
	f.Add([]byte("GET /a?b HTTP/1.1\r\nHost: x\r\nTrailer: X-A, X-B\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"))
	f.Add([]byte("X-Sum: abc\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if i := headEnd(b, 0); i >= 0 && (i < 4 || !bytes.Equal(b[i-4:i], []byte("\r\n\r\n"))) {
			t.Fatalf("headEnd %d", i)
		}
		if req, err := parseRequestHead(b); err == nil {
			req.URL.Host = "h"
			if req.Host == "" || !validHost(req.Host) {
				req.Host = "h"
			}
			req.Body = nil
			head, err := appendRequestHead(nil, req)
			if err != nil {
				return // net/http accepts what the writer refuses to send
			}
			if _, err := parseRequestHead(head); err != nil {
				t.Fatalf("rewritten head %q: %v", head, err)
			}
		}
		req, _ := http.NewRequest("GET", "http://h/", nil)
		parseResponseHead(b, req)
		if tr, err := parseTrailers(b); err == nil {
			if _, err := parseTrailers(trailerBlock(tr)); err != nil {
				t.Fatalf("rewritten trailers: %v", err)
			}
		}
	})
}
