package tcp

import (
	"context"
	"sync"
	"time"
)

// aLongTimeAgo is a deadline in the past, used to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// deadline maps a context onto one direction's deadline of a net.Conn.
// Calls to watch must not overlap; the AfterFunc it registers may run
// concurrently with them, hence the mutex.
type deadline struct {
	mu     sync.Mutex
	set    func(time.Time) error
	armed  bool // a deadline is in force on the conn
	frozen bool // Close owns the deadline now
}

// arm sets the conn's deadline unless Close has frozen it.
func (d *deadline) arm(t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.frozen {
		return false
	}
	if t.IsZero() && !d.armed {
		return true
	}
	d.set(t)
	d.armed = !t.IsZero()
	return true
}

// freeze sets a final deadline that later calls cannot move.
func (d *deadline) freeze(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.frozen = true
	d.set(t)
	d.armed = true
}

// watch applies ctx's deadline to the conn and interrupts the conn when ctx
// is cancelled. It returns false if the deadline is frozen. The returned
// stop function must be called when the I/O is over.
func (d *deadline) watch(ctx context.Context) (stop func(), ok bool) {
	if ctx.Done() == nil {
		return func() {}, d.arm(time.Time{})
	}
	t, _ := ctx.Deadline()
	if !d.arm(t) {
		return nil, false
	}
	fired := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		d.arm(aLongTimeAgo)
		close(fired)
	})
	return func() {
		if !cancel() {
			<-fired
		}
	}, true
}
