package fsp

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
)

// hsQueueLen bounds the handshakes waiting for a worker. Past it a
// request is dropped (its client retransmits) unless another prefix holds
// more of the queue: then that prefix's newest job makes room. A waiting
// job is a pending connection, so the pending quotas bound it too.
const hsQueueLen = 1024

// hsJob is one queued handshake: run does the work; drop, if set, tears
// its connection down when the job is pushed out of the queue.
type hsJob struct {
	run, drop func()
}

// hsPool runs a listener's costly handshake work (key exchange and
// signature) on at most GOMAXPROCS goroutines, so the read loop only
// parses, checks cookies and routes; CLIENT_AUTH verification, which runs
// on the connection's own loop, takes a token from the same bound
// (acquire). Workers start with the first job and exit when the queue is
// empty, so an idle transport holds none.
//
// The queue is fair between source prefixes (/24, /48; pendingPrefix):
// each prefix has its own FIFO, workers take one job from each prefix in
// turn, and a full queue makes room from the prefix holding the most.
// So a flood from many prefixes that keeps the workers saturated delays
// a client in a quiet prefix by one job per busy prefix, not by the whole
// queue, and never shuts it out.
type hsPool struct {
	mu     sync.Mutex
	queues map[netip.Prefix][]hsJob
	ring   []netip.Prefix // prefixes with jobs, in serving order
	n      int            // jobs queued

	sem  chan struct{} // one token per running worker or acquire
	once sync.Once
	// waiting counts callers blocked in acquire: a worker hands them its
	// token between jobs, so handshakes already answered finish before
	// new ones start.
	waiting atomic.Int32
}

func (p *hsPool) init() {
	p.once.Do(func() {
		p.sem = make(chan struct{}, max(runtime.GOMAXPROCS(0), 1))
	})
}

// submit queues job for source prefix src; it reports false, dropping
// it, when the queue is full and no prefix holds more of it than src. A
// job pushed out to make room has its drop called (after p.mu is
// released). It never blocks.
func (p *hsPool) submit(src netip.Prefix, job hsJob) bool {
	p.init()
	p.mu.Lock()
	var out hsJob
	if p.n >= hsQueueLen {
		big := p.largest()
		if len(p.queues[big]) <= len(p.queues[src]) {
			p.mu.Unlock()
			return false
		}
		q := p.queues[big]
		out = q[len(q)-1]
		q[len(q)-1] = hsJob{}
		p.queues[big] = q[:len(q)-1] // never empties: it held more than src
		p.n--
	}
	if p.queues == nil {
		p.queues = make(map[netip.Prefix][]hsJob)
	}
	q, ok := p.queues[src]
	if !ok || len(q) == 0 {
		p.ring = append(p.ring, src)
	}
	p.queues[src] = append(q, job)
	p.n++
	p.mu.Unlock()
	if out.drop != nil {
		out.drop()
	}
	p.spawn()
	return true
}

// room reports whether submit would take a job from src now.
func (p *hsPool) room(src netip.Prefix) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n < hsQueueLen || len(p.queues[p.largest()]) > len(p.queues[src])
}

// largest returns the prefix with the most queued jobs. Called with p.mu
// held; at most hsQueueLen prefixes have jobs.
func (p *hsPool) largest() netip.Prefix {
	var best netip.Prefix
	n := -1
	for _, pfx := range p.ring {
		if l := len(p.queues[pfx]); l > n {
			best, n = pfx, l
		}
	}
	return best
}

// next takes the oldest job of the prefix whose turn it is.
func (p *hsPool) next() (hsJob, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return hsJob{}, false
	}
	pfx := p.ring[0]
	copy(p.ring, p.ring[1:])
	p.ring = p.ring[:len(p.ring)-1]
	q := p.queues[pfx]
	job := q[0]
	q[0] = hsJob{}
	if q = q[1:]; len(q) == 0 {
		delete(p.queues, pfx)
	} else {
		p.queues[pfx] = q
		p.ring = append(p.ring, pfx)
	}
	p.n--
	return job, true
}

func (p *hsPool) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// acquire waits for a worker token, for handshake work run on the
// caller's own goroutine (a connection loop verifying CLIENT_AUTH): it
// shares the GOMAXPROCS bound with the workers.
func (p *hsPool) acquire() {
	p.init()
	p.waiting.Add(1)
	p.sem <- struct{}{}
	p.waiting.Add(-1)
}

// release returns a token taken by acquire, starting a worker for any job
// that queued meanwhile.
func (p *hsPool) release() {
	<-p.sem
	if p.queued() > 0 {
		p.spawn()
	}
}

// spawn starts a worker if fewer than GOMAXPROCS run.
func (p *hsPool) spawn() {
	select {
	case p.sem <- struct{}{}:
		go p.work()
	default:
	}
}

func (p *hsPool) work() {
	for {
		if job, ok := p.next(); ok {
			job.run()
			// Let a runnable read loop in between jobs: a worker running
			// jobs back to back is only preempted every 10 ms, and a read
			// loop kept waiting that long drops datagrams of everyone.
			runtime.Gosched()
			if p.waiting.Load() > 0 {
				<-p.sem // to the blocked acquire first (FIFO)
				p.sem <- struct{}{}
			}
			continue
		}
		<-p.sem
		// A job queued after the check above, while every token was
		// taken, started no worker: look again.
		if p.queued() == 0 {
			return
		}
		select {
		case p.sem <- struct{}{}:
		default:
			return // another worker took over
		}
	}
}
