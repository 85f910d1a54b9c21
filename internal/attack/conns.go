package attack

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// Held is what HoldConns saw.
type Held struct {
	Most    int            // connections held at once, at most
	Refused int            // dials refused with the expected error
	Other   map[string]int // other dial errors, by text, before the end
}

// holdGrace bounds how long HoldConns goes on past its context's end
// for a first refusal: a safety limit, not a speed check.
const holdGrace = 20 * time.Second

// HoldConns runs workers dialers from one source, each keeping every
// connection dial gets and dialling again at once, or 100 ms after a
// failure (so refused handshakes, a full TLS handshake each on TCP, do
// not take the cores other tests run on), until ctx ends and a dial was
// refused, or holdGrace after ctx ends; then it closes them all. A failure wrapping
// refused counts as a refusal. Fewer than 8 dials run at once, so the
// listeners' handshake rates (internal/hsrate), which apply only past
// 8 handshakes in progress, do not slow the attacker down: the
// per-source connection bound is what stops it.
func HoldConns(ctx context.Context, workers int, dial func(context.Context) (io.Closer, error), refused error) *Held {
	h := &Held{Other: map[string]int{}}
	var mu sync.Mutex
	var held []io.Closer
	// Dials get ctx's end as a cancellation, not its deadline, which a
	// stack may set on its socket and see pass (an i/o timeout) just
	// before ctx reports it.
	// They go on past ctx's end until one was refused (the bound
	// reached), which a loaded host may not see in a short run, for at
	// most holdGrace more.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	refusedOnce := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-ctx.Done():
		case <-dctx.Done():
			return
		}
		grace := time.NewTimer(holdGrace)
		defer grace.Stop()
		select {
		case <-refusedOnce:
		case <-grace.C:
		case <-dctx.Done():
		}
		cancel()
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for dctx.Err() == nil {
				c, err := dial(dctx)
				mu.Lock()
				switch {
				case err == nil:
					held = append(held, c)
					h.Most = max(h.Most, len(held))
				case errors.Is(err, refused):
					h.Refused++
					once.Do(func() { close(refusedOnce) })
				case dctx.Err() == nil:
					h.Other[err.Error()]++
				}
				mu.Unlock()
				if err != nil {
					sleep(dctx, 100*time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	var closing sync.WaitGroup
	for _, c := range held {
		closing.Go(func() { c.Close() })
	}
	closing.Wait()
	return h
}
