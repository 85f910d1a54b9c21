package fsp

import (
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHandshakePool: every job submitted runs, at most GOMAXPROCS at once
// counting acquire's holders, and a full queue refuses instead of
// blocking.
func TestHandshakePool(t *testing.T) {
	var p hsPool
	limit := int32(runtime.GOMAXPROCS(0))
	var running, peak atomic.Int32
	enter := func() {
		n := running.Add(1)
		for {
			m := peak.Load()
			if n <= m || peak.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		running.Add(-1)
	}
	var wg sync.WaitGroup
	const jobs = 200
	wg.Add(jobs)
	for range jobs {
		if !p.submit(netip.Prefix{}, hsJob{run: func() { enter(); wg.Done() }}) {
			t.Fatal("queue full below its length")
		}
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.acquire()
			enter()
			p.release()
		}()
	}
	wg.Wait()
	if got := peak.Load(); got > limit {
		t.Fatalf("%d ran at once, limit %d", got, limit)
	}

	// Hold every token: jobs queue up to hsQueueLen, then are refused.
	for range limit {
		p.acquire()
	}
	var ran atomic.Int32
	for range hsQueueLen {
		if !p.submit(netip.Prefix{}, hsJob{run: func() { ran.Add(1) }}) {
			t.Fatal("queue full below its length")
		}
	}
	if p.room(netip.Prefix{}) || p.submit(netip.Prefix{}, hsJob{run: func() {}}) {
		t.Fatal("a full queue took one more job")
	}
	for range limit {
		p.release()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ran.Load() < hsQueueLen {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d queued jobs ran", ran.Load(), hsQueueLen)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHandshakePoolFair: a prefix that filled the queue cannot add more,
// another prefix still gets in (pushing out the flood's newest job) and
// is served after at most one job of each busier prefix.
func TestHandshakePoolFair(t *testing.T) {
	var p hsPool
	limit := runtime.GOMAXPROCS(0)
	for range limit {
		p.acquire() // no worker runs until released
	}
	flood := netip.MustParsePrefix("127.3.0.0/24")
	quiet := netip.MustParsePrefix("127.0.0.0/24")
	var order []string
	var mu sync.Mutex
	note := func(s string) func() {
		return func() { mu.Lock(); order = append(order, s); mu.Unlock() }
	}
	var dropped atomic.Int32
	for range hsQueueLen {
		if !p.submit(flood, hsJob{run: note("flood"), drop: func() { dropped.Add(1) }}) {
			t.Fatal("queue full below its length")
		}
	}
	if p.room(flood) || p.submit(flood, hsJob{run: note("flood")}) {
		t.Fatal("the flood's prefix grew a full queue")
	}
	if !p.room(quiet) || !p.submit(quiet, hsJob{run: note("quiet")}) {
		t.Fatal("a full queue refused a prefix holding none of it")
	}
	if dropped.Load() != 1 || p.queued() != hsQueueLen {
		t.Fatalf("%d dropped, %d queued; want 1 and %d", dropped.Load(), p.queued(), hsQueueLen)
	}
	for range limit {
		p.release()
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.queued() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if i := slices.Index(order, "quiet"); i < 0 || i > limit+1 {
		t.Fatalf("the quiet prefix's job ran %dth of %d", i+1, len(order))
	}
}

// TestHandshakeOffReadLoop: with every handshake token held, so no key
// exchange can run, the socket's read loop still serves an established
// connection, and a new dial waits in the queue (its client
// retransmitting) until a worker is free, then completes.
func TestHandshakeOffReadLoop(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	p := &l.t.hs
	n := runtime.GOMAXPROCS(0)
	for range n {
		p.acquire()
	}
	held := true
	defer func() {
		if held {
			for range n {
				p.release()
			}
		}
	}()
	type dialed struct {
		c   *Conn
		err error
	}
	dc := make(chan dialed, 1)
	go func() {
		d, err := Dial(ctx, addrOf(l), ccfg)
		dc <- dialed{d, err}
	}()
	for i := range 5 {
		msg := []byte{byte(i)}
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
		if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != string(msg) {
			t.Fatalf("established connection while handshakes wait: %q, %v", m, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.queued() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the dial's handshake was never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case d := <-dc:
		t.Fatalf("dial completed with no handshake worker: %v", d.err)
	case <-time.After(300 * time.Millisecond):
	}
	for range n {
		p.release()
	}
	held = false
	d := <-dc
	if d.err != nil {
		t.Fatal(d.err)
	}
	defer d.c.Close()
	a, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
}
