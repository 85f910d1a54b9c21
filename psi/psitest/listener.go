package psitest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
)

// CloseAccepted accepts every root transient of l and closes it at once,
// until l is closed: a listener's hostile-network tests dial it and watch
// its limits, not the transients.
func CloseAccepted(l psi.Listener) {
	go func() {
		for {
			tr, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			tr.Close()
		}
	}()
}

// HandshakeRate checks a listener whose handshake rate (internal/hsrate)
// lets one source address complete at most most of 40 handshakes started
// at once: dial(from) completes a handshake from the IPv4 loopback
// address from, or fails. Some must succeed, at most most; a client at
// another address still connects, and the address again after a second.
// Every stack runs it (TCP, QUIC), so they limit the same way.
func HandshakeRate(t *testing.T, dial func(from string) error, most int) {
	t.Helper()
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range 40 {
		wg.Go(func() {
			if dial("127.0.0.40") == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d of 40 succeeded", ok.Load())
	if n := ok.Load(); n == 0 || n > int64(most) {
		t.Fatalf("%d of 40 handshakes at once from one address succeeded, want 1 to %d", n, most)
	}
	if err := dial("127.1.0.1"); err != nil {
		t.Fatalf("a client elsewhere: %v", err)
	}
	time.Sleep(time.Second)
	if err := dial("127.0.0.40"); err != nil {
		t.Fatalf("the address after a pause: %v", err)
	}
}
