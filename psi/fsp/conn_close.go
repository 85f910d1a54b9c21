package fsp

import (
	"fmt"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Close flushes what was written, sends RELEASE and waits for its
// acknowledgement, then frees the connection. It gives up waiting when
// the peer acknowledges nothing for 3 s (or four RTOs, if longer).
func (c *Conn) Close() error {
	c.mu.Lock()
	switch {
	case c.state == stateClosed:
		c.mu.Unlock()
		return nil
	case c.state == stateEstablished && !c.peerReleased:
		seq := c.snd.Push(txData{op: wire.Release, flags: wire.FlagEOT}, overhead)
		c.sndBytes += overhead
		c.releaseSeq = seq
		c.state = stateClosing
		c.lastProgress = time.Now()
		c.trySend()
		c.mu.Unlock()
		c.waitReleased()
	default:
		c.mu.Unlock()
	}
	c.teardown(post.Errorf(post.ErrClosed, "fsp: connection closed"), false)
	return nil
}

// waitReleased waits for the acknowledgement of our RELEASE, giving up
// when the peer stops acknowledging anything for a while.
func (c *Conn) waitReleased() {
	tm := time.NewTimer(closePoll)
	defer tm.Stop()
	for {
		select {
		case <-c.released:
			return
		case <-c.done:
			return
		case <-tm.C:
		}
		c.mu.Lock()
		// Give up only after several retransmissions went unanswered:
		// giving up on time alone, before a backed-off retransmission is
		// due, would lose the tail of the data on a lossy path.
		stalled := time.Since(c.lastProgress) > closeStall && c.backoff >= closeBackoffs
		c.mu.Unlock()
		if stalled {
			return
		}
		tm.Reset(closePoll)
	}
}

// teardown frees the connection. With reset it tells the peer by a
// protected RESET.
func (c *Conn) teardown(err error, reset bool) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	if reset && c.tx != nil && c.rcv != nil {
		p := c.header(wire.Reset, 0, c.snd.Next())
		if b := c.seal(&p, nil); b != nil {
			c.t.write(*b, &c.remote)
			putBuf(b)
		}
	}
	c.state, c.err = stateClosed, err
	c.log.Debug("fsp: connection closed", "local", c.local, "peer", c.peer, "remote", c.remote, "err", err)
	if c.timer != nil {
		c.timer.Stop()
	}
	for _, d := range c.readQ[c.readHead:] {
		putBuf(d.buf)
	}
	c.readQ, c.readHead = nil, 0
	c.dropAsm()
	if c.rcv != nil {
		c.rcv.Drain(func(d rxData) { putBuf(d.buf) })
	}
	if c.snd != nil {
		for seq := c.snd.Base(); seq < c.snd.Next(); seq++ {
			if e := c.snd.Get(seq); e != nil && e.Value.buf != nil {
				putBuf(e.Value.buf)
				e.Value.buf = nil
			}
		}
	}
	select {
	case <-c.established:
	default:
		close(c.established)
	}
	close(c.done)
	parent, peer := c.parent, c.peer
	c.mu.Unlock()
	if parent != nil {
		parent.mu.Lock()
		if parent.clones[peer] == c {
			delete(parent.clones, peer)
		}
		parent.mu.Unlock()
	}
	c.t.unregister(c)
}

func (c *Conn) debugState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := fmt.Sprintf("%x->%x remote=%v state=%d ini=%v conf=%v readQ=%d peerRel=%v rtoAt=%v timerAt=%v ackReq=%v sending=%v probes=%d pn=%d", c.local, c.peer, c.remote, c.state, c.initiator, c.confirmed, c.readLen(), c.peerReleased, time.Until(c.rtoAt), time.Until(c.timerAt), c.ackReq, c.sending, c.probes, c.replay.Largest())
	if c.snd != nil {
		s += fmt.Sprintf(" milk=%v sndBytes=%d live=%d msgStart=%d newest=%d skipSent=%d asm=%d", c.milk, c.sndBytes, c.milkLive, c.msgStart, c.newest, c.skipSent, len(c.asm))
		s += fmt.Sprintf(" snd base=%d next=%d inflight=%d pending=%v peerLimit=%d cwnd=%d rcvExp=%d ooo=%d", c.snd.Base(), c.snd.Next(), c.snd.BytesInFlight(), c.snd.HasPending(), c.peerLimit, c.cc.Window(), c.rcv.Expected(), c.rcv.Buffered())
	}
	return s
}
