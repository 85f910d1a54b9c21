package fsp

import "time"

// The fine timer of a session's congestion group: RACK deadlines a few
// tens of microseconds away (conn_cc.go). Go's timers fire up to a
// millisecond late on an idle process, longer than a loss takes to repair
// on a short path; this goroutine sleeps in short system-call sleeps
// instead, and only while a deadline is pending.

// fineStep is the longest sleep of the fine timer.
const fineStep = 200 * time.Microsecond

// schedule asks for m's RACK check at at. Called with g.mu held.
func (g *ccGroup) schedule(m *ccShare, at time.Time) {
	m.fineAt = at
	if !m.inFine {
		m.inFine = true
		g.fine = append(g.fine, m)
	}
	if !g.fineRunning {
		g.fineRunning = true
		go g.fineLoop()
	}
}

func (g *ccGroup) fineLoop() {
	var due []*Conn
	for {
		g.mu.Lock()
		now := time.Now()
		var next time.Time
		k := 0
		for _, m := range g.fine {
			switch {
			case m.fineAt.IsZero():
				m.inFine = false
			case !now.Before(m.fineAt):
				m.fineAt, m.inFine = time.Time{}, false
				due = append(due, m.c)
			default:
				if next.IsZero() || m.fineAt.Before(next) {
					next = m.fineAt
				}
				g.fine[k] = m
				k++
			}
		}
		clear(g.fine[k:])
		g.fine = g.fine[:k]
		if k == 0 {
			g.fineRunning = false
		}
		g.mu.Unlock()
		for i, c := range due {
			c.kick()
			due[i] = nil
		}
		due = due[:0]
		if k == 0 {
			return
		}
		fineSleep(min(time.Until(next), fineStep))
	}
}
