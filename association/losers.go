package association

import (
	"context"
	"sync"
)

// losers counts the losing attempts of races still being collected. Unlike
// a sync.WaitGroup, a wait may give up (its context ended) while a later
// race adds to the count.
type losers struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to zero; nil before the first add
}

func (l *losers) add() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		l.idle = make(chan struct{})
	}
	l.n++
}

func (l *losers) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n--; l.n == 0 {
		close(l.idle)
	}
}

// wait blocks until the count is zero or ctx ends.
func (l *losers) wait(ctx context.Context) error {
	l.mu.Lock()
	n, idle := l.n, l.idle
	l.mu.Unlock()
	if n == 0 {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
