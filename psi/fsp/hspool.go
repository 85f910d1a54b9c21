package fsp

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// hsQueueLen bounds the handshakes waiting for a worker. Past it the read
// loop drops new requests, whose clients retransmit; a waiting job is a
// pending connection, so the pending quotas bound it too.
const hsQueueLen = 1024

// hsPool runs a listener's costly handshake work (key exchange and
// signature) on at most GOMAXPROCS goroutines, so the read loop only
// parses, checks cookies and routes; CLIENT_AUTH verification, which runs
// on the connection's own loop, takes a token from the same bound
// (acquire). Workers start with the first job and exit when the queue is
// empty, so an idle transport holds none.
type hsPool struct {
	jobs chan func()
	sem  chan struct{} // one token per running worker or acquire
	once sync.Once
	// waiting counts callers blocked in acquire: a worker hands them its
	// token between jobs, so handshakes already answered finish before
	// new ones start.
	waiting atomic.Int32
}

func (p *hsPool) init() {
	p.once.Do(func() {
		p.jobs = make(chan func(), hsQueueLen)
		p.sem = make(chan struct{}, max(runtime.GOMAXPROCS(0), 1))
	})
}

// submit queues job; it reports false, dropping it, when the queue is
// full. It never blocks.
func (p *hsPool) submit(job func()) bool {
	p.init()
	select {
	case p.jobs <- job:
	default:
		return false
	}
	p.spawn()
	return true
}

// room reports whether submit would take a job now. The read loop is the
// only producer, so a true answer holds until it submits.
func (p *hsPool) room() bool {
	p.init()
	return len(p.jobs) < cap(p.jobs)
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
	if len(p.jobs) > 0 {
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
		select {
		case job := <-p.jobs:
			job()
			if p.waiting.Load() > 0 {
				<-p.sem // to the blocked acquire first (FIFO)
				p.sem <- struct{}{}
			}
			continue
		default:
		}
		<-p.sem
		// A job queued after the check above, while every token was
		// taken, started no worker: look again.
		if len(p.jobs) == 0 {
			return
		}
		select {
		case p.sem <- struct{}{}:
		default:
			return // another worker took over
		}
	}
}
