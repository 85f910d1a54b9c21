package fsp

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestClosedCloneLeavesWindow: a clone torn down with packets in flight
// gives its share of the session's congestion window back for good, even
// when its Stats are read afterwards, as carrier's Path does once a
// transient ended. Stats attached the closed clone to the path again
// with its packets in flight, which nothing acknowledges any more: the
// session's window stayed that much fuller, and once full, every clone's
// data waited for good (httpcarrier's TestStaleIdleFork: a request left
// unsent until the server gave up after 30 s).
func TestClosedCloneLeavesWindow(t *testing.T) {
	scfg, ccfg := pair(t)
	ccfg.DisablePacing = true
	var deaf atomic.Bool // the listener's packets are dropped
	st := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		if !deaf.Load() {
			send(b)
		}
	}}}
	c, s, _ := pairOver(t, st, &Transport{Conn: mustUDP(t)}, scfg, ccfg)
	ctx := testContext(t)
	got := make(chan string, 8)
	go func() {
		for {
			f, err := s.AcceptFork(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					m, err := f.ReceiveMessage(ctx)
					if err != nil {
						return
					}
					if len(m) < 100 {
						got <- string(m)
					}
				}
			}()
		}
	}()
	inFlight := func(f *Conn) int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.snd.BytesInFlight()
	}
	lost, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lost.SendMessage(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	<-got
	waitUntil(t, "hello acknowledged", func() bool { return inFlight(lost) == 0 })
	deaf.Store(true)
	if err := lost.SendMessage(ctx, make([]byte, 20_000)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the message in flight", func() bool { return inFlight(lost) > 0 })
	lost.Abort(nil)
	lost.Stats()

	c.mu.Lock()
	p := c.ccLock()
	held := p.inFlight - c.ccs.inFlight // the root is the only member left
	gate := &gateCC{Controller: p.cc, window: 10_000}
	p.cc = gate // shut for more than the root's own
	c.ccUnlock()
	c.mu.Unlock()
	if held != 0 {
		t.Errorf("the session's window counts %d bytes in flight of a closed clone", held)
	}
	// What that costs: a new clone's message waits for a window the
	// closed clone's bytes fill.
	deaf.Store(false)
	next, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := next.SendMessage(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "after" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second): // a hang limit: without the leak it takes a round trip
		t.Fatalf("a new clone's message not sent in 10 s: %s", next.debugState())
	}
}
