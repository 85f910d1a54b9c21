package netem

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// packet is one datagram waiting in a link's schedule.
type packet[D any] struct {
	at  int64 // release time, nanoseconds since link.base
	seq uint64
	buf *[]byte
	dst D
}

func (p *packet[D]) before(q *packet[D]) bool {
	return p.at < q.at || p.at == q.at && p.seq < q.seq
}

// link is one impaired direction. send applies the Config and either
// delivers at once or schedules the packet; a single goroutine releases
// scheduled packets in order of release time.
type link[D any] struct {
	deliver   func(b []byte, dst D) error
	blackhole atomic.Bool
	stats     counters
	base      time.Time
	wake      chan struct{}
	done      chan struct{}

	mu          sync.Mutex
	cfg         Config
	rng         *rand.Rand
	linkFree    int64 // when the bottleneck drains, ns since base
	lastRelease int64 // latest release of an in-order packet
	seq         uint64
	heap        []packet[D]
	busy        bool // a delivery is in progress
	closed      bool
}

func newLink[D any](cfg Config, deliver func([]byte, D) error) *link[D] {
	l := &link[D]{
		deliver: deliver,
		base:    time.Now(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	l.setConfig(cfg)
	go l.run()
	return l
}

func (l *link[D]) now() int64 { return int64(time.Since(l.base)) }

func (l *link[D]) setConfig(cfg Config) {
	seed := uint64(cfg.Seed)
	if seed == 0 {
		seed = rand.Uint64()
	}
	l.blackhole.Store(cfg.Blackhole)
	l.mu.Lock()
	l.cfg = cfg
	l.linkFree, l.lastRelease = 0, 0
	l.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	l.mu.Unlock()
}

func (l *link[D]) config() Config {
	l.mu.Lock()
	cfg := l.cfg
	l.mu.Unlock()
	cfg.Blackhole = l.blackhole.Load()
	return cfg
}

// backlog returns the number of packets scheduled.
func (l *link[D]) backlog() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.heap)
}

func (l *link[D]) drop() { l.stats.dropped.Add(1) }

// send impairs and forwards p. p is copied if it has to wait, so the
// caller may reuse it on return. The error is the underlying socket's,
// and only when p was delivered at once.
func (l *link[D]) send(p []byte, dst D) error {
	if l.blackhole.Load() {
		l.drop()
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.drop()
		return nil
	}
	c := &l.cfg
	if c.Loss > 0 && l.rng.Float64() < c.Loss {
		l.mu.Unlock()
		l.drop()
		return nil
	}
	now := l.now()
	at := now
	if c.Rate > 0 {
		start := max(now, l.linkFree)
		backlog := float64(start-now) * float64(c.Rate) / 1e9
		if backlog+float64(len(p)) > c.queueBytes() {
			l.mu.Unlock()
			l.stats.queueDrops.Add(1)
			l.drop()
			return nil
		}
		at = start + int64(float64(len(p))*1e9/float64(c.Rate))
		l.linkFree = at
	}
	d := c.Delay
	if c.Jitter > 0 {
		d += time.Duration(l.rng.Int64N(2*int64(c.Jitter)+1)) - c.Jitter
		d = max(d, 0)
	}
	at += int64(d)
	if c.Reorder > 0 && l.rng.Float64() < c.Reorder {
		at += int64(c.reorderDelay())
		l.stats.reordered.Add(1)
	} else {
		at = max(at, l.lastRelease)
		l.lastRelease = at
	}
	copies := 1
	if c.Duplicate > 0 && l.rng.Float64() < c.Duplicate {
		copies = 2
		l.stats.duplicated.Add(1)
	}

	if at <= now && len(l.heap) == 0 && !l.busy {
		// Nothing is waiting: deliver on the caller's goroutine.
		l.busy = true
		l.mu.Unlock()
		var err error
		for range copies {
			if e := l.forward(p, dst); e != nil {
				err = e
			}
		}
		l.mu.Lock()
		l.busy = false
		pending := len(l.heap) > 0
		l.mu.Unlock()
		if pending {
			l.signal()
		}
		return err
	}
	for range copies {
		l.seq++
		l.push(packet[D]{at: at, seq: l.seq, buf: getBuf(p), dst: dst})
	}
	first := l.heap[0].seq > l.seq-uint64(copies)
	l.mu.Unlock()
	if first {
		l.signal()
	}
	return nil
}

// forward hands one packet to the underlying socket and counts it.
func (l *link[D]) forward(b []byte, dst D) error {
	if l.blackhole.Load() {
		l.drop()
		return nil
	}
	// Count first, so a receiver never sees a packet not yet counted.
	l.stats.packets.Add(1)
	l.stats.bytes.Add(uint64(len(b)))
	err := l.deliver(b, dst)
	if err != nil {
		l.stats.packets.Add(^uint64(0))
		l.stats.bytes.Add(-uint64(len(b)))
		if err == errDropped {
			l.drop()
			return nil
		}
		l.stats.errors.Add(1)
	}
	return err
}

func (l *link[D]) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run releases scheduled packets until close.
func (l *link[D]) run() {
	defer close(l.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		l.mu.Lock()
		var wait int64
		for !l.closed && len(l.heap) > 0 && !l.busy {
			if wait = l.heap[0].at - l.now(); wait > 0 {
				break
			}
			p := l.pop()
			l.busy = true
			l.mu.Unlock()
			l.forward(*p.buf, p.dst)
			putBuf(p.buf)
			l.mu.Lock()
			l.busy = false
		}
		if l.closed {
			for _, p := range l.heap {
				putBuf(p.buf)
				l.drop()
			}
			l.heap = nil
			l.mu.Unlock()
			return
		}
		idle := len(l.heap) == 0 || l.busy
		l.mu.Unlock()
		if idle {
			<-l.wake
			continue
		}
		timer.Reset(time.Duration(wait))
		select {
		case <-timer.C:
		case <-l.wake:
			timer.Stop()
		}
	}
}

// close drops everything still scheduled and stops the goroutine.
func (l *link[D]) close() {
	l.shutdown()
	<-l.done
}

// shutdown makes the goroutine stop after any delivery in progress,
// which closing the socket then unblocks; wait with <-l.done.
func (l *link[D]) shutdown() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.signal()
}

func (l *link[D]) push(p packet[D]) {
	h := append(l.heap, p)
	i := len(h) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h[i].before(&h[parent]) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
	l.heap = h
}

func (l *link[D]) pop() packet[D] {
	h := l.heap
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = packet[D]{}
	h = h[:n]
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && h[c+1].before(&h[c]) {
			c++
		}
		if !h[c].before(&h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	l.heap = h
	return top
}
