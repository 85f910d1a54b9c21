package httpcarrier

import (
	"errors"
	"net/http"
	"runtime"
	"testing"

	"github.com/postsockets/postsockets/post"
)

// TestHeadParseAllocates: parsing a small request head and its response
// head allocates a few hundred bytes each, not the 4 KiB buffer per
// parse (two a head) they took, which made half the bytes a small
// request allocated.
func TestHeadParseAllocates(t *testing.T) {
	reqHead := []byte("GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
	respHead := []byte("HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nContent-Type: application/octet-stream\r\n\r\n")
	req, _ := http.NewRequest("GET", "http://h/x", nil)
	const n = 1000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		if _, err := parseRequestHead(reqHead); err != nil {
			t.Fatal(err)
		}
		if _, err := parseResponseHead(respHead, req); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per request and response head", per)
	if per > 4096 {
		t.Errorf("%d bytes allocated per request and response head; want at most 4096", per)
	}
}

// TestTransferEncodingRefused: a head naming Transfer-Encoding, in any
// case, is refused whatever net/http would make of it.
func TestTransferEncodingRefused(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://h/", nil)
	for _, te := range []string{"Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING", "tRaNsFeR-eNcOdInG"} {
		if _, err := parseRequestHead([]byte("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n" + te + ": chunked\r\n\r\n")); !errors.Is(err, post.ErrMalformed) {
			t.Errorf("request with %s: %v, want post.ErrMalformed", te, err)
		}
		if _, err := parseResponseHead([]byte("HTTP/1.1 200 OK\r\n"+te+": chunked\r\nContent-Length: 3\r\n\r\n"), req); !errors.Is(err, post.ErrMalformed) {
			t.Errorf("response with %s: %v, want post.ErrMalformed", te, err)
		}
	}
	if !containsFold([]byte("x: 1\r\nTransfer-encoding: gzip\r\n"), "transfer-encoding") || containsFold([]byte("Transfer-Encodin"), "transfer-encoding") {
		t.Error("containsFold")
	}
}

// TestSlotsMessage: the server's slots message reads back; other
// messages and announcements out of range are not one.
func TestSlotsMessage(t *testing.T) {
	if n, ok := parseSlots(slotsMsg(256)); !ok || n != 256 {
		t.Errorf("slots 256 read as %d, %v", n, ok)
	}
	if n, ok := parseSlots([]byte("slots 99999999999")); !ok || n != maxSlots {
		t.Errorf("a huge announcement read as %d, %v; want %d", n, ok, maxSlots)
	}
	for _, m := range []string{"goaway", "slots 0", "slots -1", "slots ", "slots x", "slots 1e3", "slot 5"} {
		if n, ok := parseSlots([]byte(m)); ok {
			t.Errorf("%q read as %d slots", m, n)
		}
	}
}
