package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/fronttest"
)

// TestFrontSlowReader: a client that asks for a large response and never
// reads it does not hold its request, its fork and the origin's request
// for ever. Before, the front had no bound on writing a response: the
// origin's handler here, writing without end, was still blocked when the
// test gave up.
func TestFrontSlowReader(t *testing.T) {
	ended := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(ended)
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(origin.Close)
	front := gatewaysArgs(t, origin.URL, "127.0.0.1", nil, nil, nil, []string{"-write-timeout", "1s"})
	c := fronttest.DialFrom(t, "127.0.0.1", front)
	fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the origin's response to a client that never reads was still being written after 30 s")
	}
}
