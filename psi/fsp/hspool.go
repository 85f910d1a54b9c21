package fsp

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/postsockets/postsockets/psi/fsp/internal/fairq"
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
// turn, and a full queue makes room from the prefix holding the most
// (fairq, which finds it in O(log n)). So a flood from many prefixes that keeps the workers saturated delays
// a client in a quiet prefix by one job per busy prefix, not by the whole
// queue, and never shuts it out.
type hsPool struct {
	mu sync.Mutex
	q  fairq.Queue[netip.Prefix, hsJob]

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
		p.q.MaxItems, p.q.Slot = hsQueueLen, 1
	})
}

// submit queues job for source prefix src; it reports false, dropping
// it, when the queue is full and no prefix holds more of it than src. A
// job pushed out to make room has its drop called (after p.mu is
// released). It never blocks.
func (p *hsPool) submit(src netip.Prefix, job hsJob) bool {
	p.init()
	p.mu.Lock()
	out, ok := p.q.Push(src, job, 0, nil)
	p.mu.Unlock()
	for _, j := range out {
		if j.drop != nil {
			j.drop()
		}
	}
	if ok {
		p.spawn()
	}
	return ok
}

// room reports whether submit would take a job from src now.
func (p *hsPool) room(src netip.Prefix) bool {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.q.Room(src, 0)
}

// next takes the oldest job of the prefix whose turn it is.
func (p *hsPool) next() (hsJob, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, job, ok := p.q.Pop()
	return job, ok
}

func (p *hsPool) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.q.Len()
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
