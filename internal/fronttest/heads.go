package fronttest

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
)

// LargeHeads opens 32 connections from 127.0.0.1 to the front at addr,
// each sending 960 KiB of a request head that never ends, and fails
// unless the front refuses every head with 431 and its process's heap
// grows by less than 256 KiB a head. With net/http's default
// MaxHeaderBytes (1 MiB) a front holds each whole until its
// ReadHeaderTimeout: over 32 MiB here.
func LargeHeads(t *testing.T, addr string) {
	t.Helper()
	const conns, head = 32, 960 << 10
	line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
	before := attack.LiveHeap()
	var wg sync.WaitGroup
	answered := make([]string, conns)
	for i := range conns {
		c := DialFrom(t, "127.0.0.1", addr)
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			w := bufio.NewWriterSize(c, 64<<10)
			fmt.Fprintf(w, "GET / HTTP/1.1\r\nHost: x\r\n")
			for n := 0; n < head; n += len(line) {
				if _, err := w.WriteString(line); err != nil {
					break
				}
			}
			w.Flush()
			// The front answers a refused head at once; an accepted one
			// waits for its end, until the deadline.
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				answered[i] = resp.Status
			}
		})
	}
	wg.Wait()
	grew := int64(attack.LiveHeap()) - int64(before)
	t.Logf("heap grew %.1f MiB with %d heads of %d KiB sent; first answer %q", float64(grew)/(1<<20), conns, head>>10, answered[0])
	if grew > conns*256<<10 {
		t.Errorf("the front's heap grew %.1f MiB for %d unfinished heads", float64(grew)/(1<<20), conns)
	}
	for i, a := range answered {
		if !strings.HasPrefix(a, "431") {
			t.Fatalf("head %d of %d KiB answered %q, want 431", i, head>>10, a)
		}
	}
}
