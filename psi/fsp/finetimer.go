package fsp

import (
	"sync"
	"time"
)

// Go's timers fire up to a millisecond late on Linux when the process is
// idle: the netpoller sleeps in whole milliseconds. On a LAN that is ten
// round trips, and a probe timeout of a few hundred microseconds would
// fire after a millisecond. A Transport's connections therefore hand
// deadlines less than fineHorizon away to one fineTimer, which waits on
// an alarm the poller watches (a timerfd on Linux, finetimer_linux.go):
// it fires tens of microseconds late. Where there is no such alarm, the
// connections use time.AfterFunc.

const (
	// fineHorizon: deadlines nearer than this go to the fine timer.
	fineHorizon = 2 * time.Millisecond
	// fineLinger is how long an idle fine timer keeps its alarm and
	// goroutine before releasing them.
	fineLinger = time.Second
)

// alarm is a one-shot timer the goroutine of a fineTimer waits on.
type alarm interface {
	set(d time.Duration) error // (re)arm to fire once, d from now
	wait() error               // block until it fires, or fail once closed
	close()
}

// fineTimer runs the near deadlines of a Transport's connections. The
// zero value is ready; close stops it for good.
type fineTimer struct {
	newAlarm func() (alarm, error) // nil: the platform's (newPlatformAlarm)
	fire     func(*Conn)           // nil: go c.timerFired()

	mu     sync.Mutex
	epoch  time.Time // deadlines are kept as nanoseconds since epoch
	q      fineQueue
	a      alarm // nil while not running
	armed  int64 // the deadline the alarm is set for; 0 when lingering
	failed bool  // no alarm on this platform: callers use time.AfterFunc
	closed bool
}

// fineEntry is a deadline handed to the fine timer. The connection's
// fineAt holds the one that is current; older ones are skipped.
type fineEntry struct {
	at int64
	c  *Conn
}

// schedule makes the timer call c.timerFired at at (c.fineAt is set to
// it: a later schedule or c.fineAt.Store(0) cancels it). It reports
// false if there is no fine timer; the caller then uses its own.
func (f *fineTimer) schedule(c *Conn, at time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed || f.closed {
		return false
	}
	if f.a == nil {
		mk := f.newAlarm
		if mk == nil {
			mk = newPlatformAlarm
		}
		a, err := mk()
		if err != nil {
			f.failed = true
			return false
		}
		if f.epoch.IsZero() {
			f.epoch = time.Now()
		}
		f.a, f.armed = a, 0
		go f.run(a)
	}
	ns := max(int64(at.Sub(f.epoch)), 1)
	c.fineAt.Store(ns)
	f.q.push(fineEntry{at: ns, c: c})
	f.rearm()
	return true
}

// cancel drops c's deadline, if it has one here.
func (f *fineTimer) cancel(c *Conn) {
	if c.fineAt.Load() == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c.fineAt.Store(0)
	f.rearm()
}

// rearm drops the replaced and cancelled deadlines at the head of the
// queue and sets the alarm for the next live one, or to linger: a
// deadline an acknowledgement cancelled (most probe timeouts) then costs
// a system call, not a wake-up. Called with f.mu held.
func (f *fineTimer) rearm() {
	if f.a == nil {
		return
	}
	for len(f.q) > 0 && f.q[0].c.fineAt.Load() != f.q[0].at {
		f.q.pop()
	}
	var err error
	switch {
	case len(f.q) == 0:
		if f.armed != 0 {
			f.armed = 0
			err = f.a.set(fineLinger)
		}
	case f.q[0].at != f.armed:
		f.armed = f.q[0].at
		err = f.a.set(time.Until(f.epoch.Add(time.Duration(f.armed))))
	}
	if err != nil {
		f.failed = true // the entries already queued still fire: run polls
	}
}

// close stops the timer; pending deadlines do not fire.
func (f *fineTimer) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.a != nil {
		f.a.close()
		f.a = nil
	}
	f.q = f.q[:0]
}

// run fires the deadlines as they come due, and stops once a linger
// period passes with none.
func (f *fineTimer) run(a alarm) {
	var due []*Conn
	for {
		err := a.wait()
		f.mu.Lock()
		if f.a != a {
			f.mu.Unlock()
			return // closed
		}
		now := int64(time.Since(f.epoch))
		due = f.q.popDue(now, due[:0])
		idle := err == nil && f.armed == 0 && len(due) == 0 && len(f.q) == 0
		if err != nil || idle {
			// Failed, or lingered without work: release the alarm. The
			// deadlines still queued (after a failure) fire on the
			// connections' own timers from now on.
			a.close()
			f.a = nil
			if err != nil {
				f.failed = true
			}
			rest := f.q
			f.q = nil
			f.mu.Unlock()
			fireLater(rest, f.epoch)
			f.fireAll(due)
			return
		}
		f.armed = -1 // the alarm fired: set it again whatever comes next
		f.rearm()
		if f.failed {
			a.set(time.Microsecond) // best effort: wake the loop to release it
		}
		f.mu.Unlock()
		f.fireAll(due)
	}
}

func (f *fineTimer) fireAll(due []*Conn) {
	for _, c := range due {
		if f.fire != nil {
			f.fire(c)
			continue
		}
		go c.timerFired()
	}
}

// fireLater hands the live entries of q to Go timers.
func fireLater(q fineQueue, epoch time.Time) {
	for _, e := range q {
		if e.c.fineAt.Load() == e.at {
			c := e.c
			time.AfterFunc(time.Until(epoch.Add(time.Duration(e.at))), func() {
				if c.fineAt.CompareAndSwap(e.at, 0) {
					c.timerFired()
				}
			})
		}
	}
}

// fineQueue is a min-heap of deadlines.
type fineQueue []fineEntry

func (q *fineQueue) push(e fineEntry) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			break
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (q *fineQueue) pop() fineEntry {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = fineEntry{}
	h = h[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && h[l].at < h[m].at {
			m = l
		}
		if r := l + 1; r < n && h[r].at < h[m].at {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

// popDue removes the entries due at now and appends to due the
// connections whose current deadline they are, claiming it (fineAt set
// to zero). Stale entries are dropped.
func (q *fineQueue) popDue(now int64, due []*Conn) []*Conn {
	for len(*q) > 0 && (*q)[0].at <= now {
		e := q.pop()
		if e.c.fineAt.CompareAndSwap(e.at, 0) {
			due = append(due, e.c)
		}
	}
	return due
}
