package fsp

import (
	"runtime"
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
		if !p.submit(func() { enter(); wg.Done() }) {
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
		if !p.submit(func() { ran.Add(1) }) {
			t.Fatal("queue full below its length")
		}
	}
	if p.room() || p.submit(func() {}) {
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
