package fsp

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/post"
)

// TestPendingFloodKeepsBudget: CONNECT_REQUESTs with valid cookies, never
// confirmed, from 32 addresses in as many /24 prefixes, while a client
// 100 ms away dials: every dial succeeds. Handshakes were charged to the
// memory budget when they were still pending, so 32 flooders x 32 pending
// each filled the 256 MiB and every client was refused (issue 10: state
// before proof must never deny a legitimate client).
func TestPendingFloodKeepsBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("attack, several seconds")
	}
	scfg, ccfg := pair(t)
	ccfg.HandshakeTimeout = 10 * time.Second
	l := listen(t, scfg)
	relay, err := netem.NewRelay(addrOf(l), netem.Config{Delay: 50 * time.Millisecond}, netem.Config{Delay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	const flooders = 32
	var wg sync.WaitGroup
	var floods []*flooder
	for i := range flooders {
		f := newFlooder(t, netip.AddrFrom4([4]byte{127, byte(10 + i), 0, 1}), l.Addr())
		floods = append(floods, f)
		wg.Go(func() { f.run(ctx, uint32(0x100000*(i+1))) })
	}
	go func() {
		for ctx.Err() == nil {
			if c, err := l.Accept(ctx); err == nil {
				go c.Close()
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	var mu sync.Mutex
	var dials, ok, refused int
	var slowest time.Duration
	var committed int64
	var dialers sync.WaitGroup
	for range 15 {
		time.Sleep(200 * time.Millisecond)
		dialers.Go(func() {
			st := time.Now()
			dctx, dc := context.WithTimeout(context.Background(), 10*time.Second)
			defer dc()
			c, err := dialUDP(dctx, loopback, relay.Addr(), ccfg)
			mu.Lock()
			defer mu.Unlock()
			dials++
			committed = max(committed, l.Stats().Committed)
			if err != nil {
				t.Logf("dial: %v", err)
				if errors.Is(err, post.ErrRefused) {
					refused++
				}
				return
			}
			c.Close()
			ok++
			slowest = max(slowest, time.Since(st))
		})
	}
	dialers.Wait()
	cancel()
	wg.Wait()
	var reqs int64
	for _, f := range floods {
		reqs += f.requests.Load()
	}
	tr := l.Transport()
	tr.mu.Lock()
	n := len(tr.pending.byPrefix)
	tr.mu.Unlock()
	t.Logf("%d/%d dials from 100 ms away succeeded (slowest %v) against %d valid CONNECT_REQUESTs from %d prefixes (%d prefixes pending at the end)", ok, dials, slowest, reqs, flooders, n)
	// Refusals are what the flood caused; a slow dial is the flood's
	// CPU and socket load on a shared test machine.
	// The legitimate connections themselves stay charged while they close
	// (a round trip of 100 ms, then time-wait), so they may all overlap;
	// the flood's 32 prefixes of unconfirmed handshakes must add nothing.
	if refused > 0 || committed > int64(4+dials)*connCharge() {
		t.Fatalf("%d of %d legitimate dials refused; the budget held %d bytes for handshakes never confirmed", refused, dials, committed)
	}
}
