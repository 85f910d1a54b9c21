package fsp

import (
	"runtime"
	"sync"
)

// hsQueueLen bounds the handshakes waiting for a worker. Past it the read
// loop drops new requests, whose clients retransmit; a waiting job is a
// pending connection, so the pending quotas bound it too.
const hsQueueLen = 1024

// hsPool runs a listener's costly handshake work (key exchange,
// signature, CLIENT_AUTH verification) on at most GOMAXPROCS goroutines,
// so the read loop only parses, checks cookies and routes. Workers start
// with the first job and exit when the queue is empty, so an idle
// transport holds none.
type hsPool struct {
	jobs chan func()
	sem  chan struct{} // one token per running worker
	once sync.Once
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
