package ctxend

import (
	"context"
	"sync"
	"time"
)

// Late returns a context whose deadline has already passed but which
// becomes done only after lag, as a context looks to a socket whose
// deadline fired before the context's timer ran. Tests use it to make
// that race happen every time. The returned cancel ends it at once.
func Late(lag time.Duration) (context.Context, context.CancelFunc) {
	l := &late{deadline: time.Now().Add(-time.Millisecond), done: make(chan struct{})}
	t := time.AfterFunc(lag, l.end)
	return l, func() { t.Stop(); l.end() }
}

type late struct {
	deadline time.Time
	once     sync.Once
	done     chan struct{}
}

func (l *late) end()                        { l.once.Do(func() { close(l.done) }) }
func (l *late) Deadline() (time.Time, bool) { return l.deadline, true }
func (l *late) Done() <-chan struct{}       { return l.done }
func (l *late) Value(any) any               { return nil }
func (l *late) String() string              { return "ctxend.Late" }

func (l *late) Err() error {
	select {
	case <-l.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}
