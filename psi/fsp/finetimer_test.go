package fsp

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// timerAlarm is an alarm made of a Go timer, for tests in a synctest
// bubble (where time is fake).
type timerAlarm struct {
	mu     sync.Mutex
	t      *time.Timer
	c      chan struct{}
	closed chan struct{}
	sets   []time.Duration
}

func newTimerAlarm() *timerAlarm {
	return &timerAlarm{c: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (a *timerAlarm) set(d time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sets = append(a.sets, d)
	if a.t != nil {
		a.t.Stop()
	}
	a.t = time.AfterFunc(d, func() {
		select {
		case a.c <- struct{}{}:
		default:
		}
	})
	return nil
}

func (a *timerAlarm) wait() error {
	select {
	case <-a.c:
		return nil
	case <-a.closed:
		return errors.New("closed")
	}
}

func (a *timerAlarm) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.t != nil {
		a.t.Stop()
	}
	select {
	case <-a.closed:
	default:
		close(a.closed)
	}
}

// firings records which connections a fine timer fired, and when.
type firings struct {
	mu  sync.Mutex
	at  map[*Conn][]time.Duration
	t0  time.Time
	all int
}

func (r *firings) fire(c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at[c] = append(r.at[c], time.Since(r.t0))
	r.all++
}

func (r *firings) get(c *Conn) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.at[c])
}

// TestFineTimer: deadlines fire in order at their time, a later schedule
// of the same connection replaces the earlier one, and the timer releases
// its alarm after lingering idle, taking a new one when needed.
func TestFineTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var alarms []*timerAlarm
		rec := &firings{at: map[*Conn][]time.Duration{}, t0: time.Now()}
		f := &fineTimer{fire: rec.fire, newAlarm: func() (alarm, error) {
			a := newTimerAlarm()
			alarms = append(alarms, a)
			return a, nil
		}}
		a, b, c := &Conn{}, &Conn{}, &Conn{}
		now := time.Now()
		for _, s := range []struct {
			c  *Conn
			at time.Duration
		}{{a, 300 * time.Microsecond}, {b, 100 * time.Microsecond}, {c, time.Millisecond}, {c, 1500 * time.Microsecond}} {
			if !f.schedule(s.c, now.Add(s.at)) {
				t.Fatal("schedule refused")
			}
		}
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		for _, w := range []struct {
			c    *Conn
			want time.Duration
		}{{a, 300 * time.Microsecond}, {b, 100 * time.Microsecond}, {c, 1500 * time.Microsecond}} {
			if got := rec.get(w.c); len(got) != 1 || got[0] != w.want {
				t.Errorf("fired at %v, want once at %v", got, w.want)
			}
		}
		if a.fineAt.Load() != 0 || c.fineAt.Load() != 0 {
			t.Error("fired deadlines not cleared")
		}

		// Cancelled (acknowledged): the alarm is set to linger, not left
		// to wake the timer for nothing.
		f.schedule(a, time.Now().Add(200*time.Microsecond))
		f.cancel(a)
		al := alarms[0]
		al.mu.Lock()
		last := al.sets[len(al.sets)-1]
		al.mu.Unlock()
		if last != fineLinger {
			t.Errorf("alarm set to %v after the only deadline was cancelled, want the linger %v", last, fineLinger)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := len(rec.get(a)); n != 1 {
			t.Errorf("a cancelled deadline fired (%d firings)", n)
		}

		// Idle past the linger period: the alarm is released, and the
		// next deadline takes a new one.
		time.Sleep(3 * fineLinger)
		synctest.Wait()
		f.mu.Lock()
		running := f.a != nil
		f.mu.Unlock()
		if running {
			t.Fatal("fine timer still holds its alarm after lingering idle")
		}
		select {
		case <-alarms[0].closed:
		default:
			t.Fatal("alarm not closed")
		}
		f.schedule(b, time.Now().Add(50*time.Microsecond))
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := len(rec.get(b)); n != 2 || len(alarms) != 2 {
			t.Errorf("after restart: b fired %d times with %d alarms, want 2 and 2", n, len(alarms))
		}

		f.schedule(c, time.Now().Add(time.Millisecond))
		f.close()
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		if n := len(rec.get(c)); n != 1 {
			t.Errorf("a deadline fired after close (%d firings)", n)
		}
		if f.schedule(c, time.Now().Add(time.Millisecond)) {
			t.Error("closed fine timer took a deadline")
		}
	})
}

// TestFineTimerUnavailable: without an alarm, schedule says so and the
// connection keeps its own timer.
func TestFineTimerUnavailable(t *testing.T) {
	f := &fineTimer{newAlarm: func() (alarm, error) { return nil, errors.New("none") }}
	if f.schedule(&Conn{}, time.Now().Add(time.Millisecond)) {
		t.Fatal("schedule accepted without an alarm")
	}
}

// TestFineQueue pops deadlines in order and skips replaced ones.
func TestFineQueue(t *testing.T) {
	var q fineQueue
	conns := make([]*Conn, 50)
	for i := range conns {
		conns[i] = &Conn{}
		at := int64((i*37)%50 + 1)
		conns[i].fineAt.Store(at)
		q.push(fineEntry{at: at, c: conns[i]})
	}
	q.push(fineEntry{at: 1000, c: conns[3]}) // stale: conns[3] is due earlier
	var got []*Conn
	got = q.popDue(25, got)
	if len(got) != 25 {
		t.Fatalf("%d due at 25, want 25", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].fineAt.Load() != 0 {
			t.Fatal("due deadline not claimed")
		}
	}
	got = q.popDue(2000, got[:0])
	if len(got) != 25 || len(q) != 0 {
		t.Fatalf("%d more due, %d left; want 25 and 0", len(got), len(q))
	}
}

// TestFineTimerPlatform: the platform's alarm (a timerfd on Linux) fires
// a sub-millisecond deadline (contract: within a second).
func TestFineTimerPlatform(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the fine timer's alarm is Linux only")
	}
	done := make(chan time.Time, 1)
	f := &fineTimer{fire: func(*Conn) { done <- time.Now() }}
	defer f.close()
	t0 := time.Now()
	if !f.schedule(&Conn{}, t0.Add(300*time.Microsecond)) {
		t.Fatal("no fine timer on Linux")
	}
	select {
	case at := <-done:
		t.Logf("300µs deadline fired after %v", at.Sub(t0))
	case <-time.After(time.Second):
		t.Fatal("deadline did not fire within 1 s")
	}
}
