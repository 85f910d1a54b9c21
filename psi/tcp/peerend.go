package tcp

import (
	"sync"
	"time"
)

// peerEndWatch ends a blocked write once the peer's FIN has arrived. A
// peer that closed while our write waits on its full window leaves the
// write blocked until a zero-window probe, whose interval backs off to
// seconds, draws a reset from its closed socket. While a write is in
// progress, the watch polls the connection's state, finely at first, and
// cuts the write when the peer has ended its stream: its Close is a full
// close, so nothing more we send will be read.
type peerEndWatch struct {
	ended func() bool // the peer's FIN has arrived
	cut   func()      // interrupts the write in progress

	mu     sync.Mutex
	timer  *time.Timer
	active bool
	wait   time.Duration
}

// Polling intervals: the first check comes after a write has been blocked
// for peerEndFirst, and the interval doubles up to peerEndMax.
const (
	peerEndFirst = 2 * time.Millisecond
	peerEndMax   = 50 * time.Millisecond
)

// begin starts watching a write; end must follow when it is over.
func (w *peerEndWatch) begin() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.active = true
	w.wait = peerEndFirst
	if w.timer == nil {
		w.timer = time.AfterFunc(w.wait, w.check)
	} else {
		w.timer.Reset(w.wait)
	}
}

// end stops watching.
func (w *peerEndWatch) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.active = false
	w.timer.Stop()
}

func (w *peerEndWatch) check() {
	w.mu.Lock()
	active := w.active
	w.mu.Unlock()
	if !active {
		return
	}
	ended := w.ended()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !w.active:
	case ended:
		// Under the lock, so no cut outlives end.
		w.cut()
	default:
		w.wait = min(2*w.wait, peerEndMax)
		w.timer.Reset(w.wait)
	}
}
