package rendezvous

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"
)

// rconn is a minimal go-back-N reliable message layer over a connected
// PacketConn. The NAT tests use it to move a file over the ICE path when
// the FSP stack is not available.
type rconn struct {
	pc   net.PacketConn
	peer net.Addr

	mu       sync.Mutex
	cond     *sync.Cond
	base     uint32   // oldest unacknowledged sequence number
	unacked  [][]byte // packets base, base+1, ...
	progress time.Time
	expected uint32 // next sequence number to receive
	partial  []byte
	inbox    [][]byte
	err      error

	done chan struct{}
	wg   sync.WaitGroup
}

const (
	rWindow   = 256
	rChunk    = 1100
	rTimeout  = 150 * time.Millisecond
	kindData  = 'D'
	kindAck   = 'A'
	flagEnd   = 1
	rHeaderSz = 6
)

func newRconn(pc net.PacketConn, peer net.Addr) *rconn {
	r := &rconn{pc: pc, peer: peer, done: make(chan struct{}), progress: time.Now()}
	r.cond = sync.NewCond(&r.mu)
	r.wg.Add(2)
	go r.readLoop()
	go r.retransmitLoop()
	return r
}

func (r *rconn) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *rconn) readLoop() {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, _, err := r.pc.ReadFrom(buf)
		if err != nil {
			r.fail(err)
			return
		}
		if n < rHeaderSz {
			continue
		}
		seq := binary.BigEndian.Uint32(buf[1:5])
		switch buf[0] {
		case kindAck:
			r.mu.Lock()
			for d := seq - r.base; d > 0 && d <= uint32(len(r.unacked)); d = seq - r.base {
				r.unacked = r.unacked[1:]
				r.base++
				r.progress = time.Now()
			}
			r.cond.Broadcast()
			r.mu.Unlock()
		case kindData:
			r.mu.Lock()
			if seq == r.expected {
				r.expected++
				r.partial = append(r.partial, buf[rHeaderSz:n]...)
				if buf[5]&flagEnd != 0 {
					r.inbox = append(r.inbox, r.partial)
					r.partial = nil
					r.cond.Broadcast()
				}
			}
			var ack [rHeaderSz]byte
			ack[0] = kindAck
			binary.BigEndian.PutUint32(ack[1:5], r.expected)
			r.mu.Unlock()
			r.pc.WriteTo(ack[:], r.peer)
		}
	}
}

func (r *rconn) retransmitLoop() {
	defer r.wg.Done()
	t := time.NewTicker(rTimeout / 3)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		var resend [][]byte
		if len(r.unacked) > 0 && time.Since(r.progress) > rTimeout {
			resend = append(resend, r.unacked...)
			r.progress = time.Now()
		}
		r.mu.Unlock()
		for _, p := range resend {
			r.pc.WriteTo(p, r.peer)
		}
	}
}

// Send queues msg and returns once it fits in the window.
func (r *rconn) Send(msg []byte) error {
	for first := true; first || len(msg) > 0; first = false {
		n := min(len(msg), rChunk)
		p := make([]byte, rHeaderSz+n)
		p[0] = kindData
		copy(p[rHeaderSz:], msg[:n])
		msg = msg[n:]
		if len(msg) == 0 {
			p[5] = flagEnd
		}
		r.mu.Lock()
		for len(r.unacked) >= rWindow && r.err == nil {
			r.cond.Wait()
		}
		if r.err != nil {
			r.mu.Unlock()
			return r.err
		}
		binary.BigEndian.PutUint32(p[1:5], r.base+uint32(len(r.unacked)))
		if len(r.unacked) == 0 {
			r.progress = time.Now()
		}
		r.unacked = append(r.unacked, p)
		r.mu.Unlock()
		if _, err := r.pc.WriteTo(p, r.peer); err != nil {
			return err
		}
	}
	return nil
}

// Flush waits until everything sent is acknowledged.
func (r *rconn) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.unacked) > 0 && r.err == nil {
		r.cond.Wait()
	}
	return r.err
}

// Recv returns the next whole message.
func (r *rconn) Recv() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.inbox) == 0 && r.err == nil {
		r.cond.Wait()
	}
	if len(r.inbox) == 0 {
		return nil, r.err
	}
	m := r.inbox[0]
	r.inbox = r.inbox[1:]
	return m, nil
}

// Close stops the layer's goroutines and closes the PacketConn.
func (r *rconn) Close() error {
	close(r.done)
	err := r.pc.Close()
	r.fail(errors.New("closed"))
	r.wg.Wait()
	return err
}
