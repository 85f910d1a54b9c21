package fsp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Close is CloseContext bounded by Config.Linger (default 3 s).
func (c *Conn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.linger())
	defer cancel()
	return c.CloseContext(ctx)
}

// CloseContext ends the connection in order: it flushes what was
// written, sends RELEASE and waits until the peer acknowledged everything
// up to it, then frees the connection and returns nil. Against a live
// peer that reads this takes about a round trip. If ctx ends first
// (against a vanished peer, or one whose reader keeps its window shut),
// it aborts the connection with a RESET and returns an error wrapping
// post.ErrTimeout; if the connection failed (reset by the peer, peer
// dead), it returns why. Once the peer released the connection Close
// only waits for the data still unacknowledged. Blocked calls return
// post.ErrClosed at once; unread inbound data is discarded. A second
// Close returns nil.
func (c *Conn) CloseContext(ctx context.Context) error {
	c.awaitEarly(ctx) // a 0-RTT dial or message: close what the handshake makes
	c.mu.Lock()
	switch {
	case c.state == stateClosed:
		err := c.err
		c.mu.Unlock()
		if c.closedHere(err) {
			return nil
		}
		return err
	case c.state == stateEstablished && !c.peerReleased:
		seq := c.snd.Push(txData{op: wire.Release, flags: wire.FlagEOT}, overhead)
		c.sndBytes += overhead
		c.releaseSeq, c.sentRelease = seq, true
		c.state = stateClosing
		c.dropUnread()
		c.lastProgress = time.Now()
		c.trySend()
	case c.state == stateEstablished:
		// The peer released first: acknowledge its RELEASE now (the read
		// loop may not have yet, and nothing would once the connection
		// is gone), then wait for our data to be acknowledged.
		c.releaseSeq = c.snd.Next() - 1
		c.state = stateClosing
		c.dropUnread()
		c.ackNow = true
		c.trySend()
		if c.snd.Base() > c.releaseSeq {
			c.releaseDone()
		}
	case c.state != stateClosing:
		// Still connecting: nothing was sent.
		c.mu.Unlock()
		c.teardown(errLocalClose, false)
		return nil
	}
	c.mu.Unlock()
	select {
	case <-c.released:
	case <-c.done:
	case <-ctx.Done():
	}
	// Success wins over a context that ended at the same time.
	select {
	case <-c.released:
		c.mu.Lock()
		// Acknowledge now what arrived with the acknowledgement of our
		// RELEASE (nothing would once the connection is closed), and stay
		// in time-wait: the peer may still be sending, and its stream
		// completes only when we acknowledge it (issue 11).
		if c.ackPending > 0 || c.ackNow || !c.ackAt.IsZero() {
			c.ackNow = true
			c.trySend()
		}
		c.timeWait = true
		c.mu.Unlock()
		c.teardown(errLocalClose, false)
		return nil
	case <-c.done:
		c.mu.Lock()
		err := c.err
		if !c.closedHere(err) {
			// The connection failed while closing (the peer reset it, or
			// went silent through the linger): Close reports that, and
			// later calls see a closed connection, as after any Close.
			c.err = &closeFailed{err: err}
		}
		c.mu.Unlock()
		if c.closedHere(err) {
			return nil // a concurrent Close finished
		}
		return err
	default:
		err := fmt.Errorf("%w: fsp: close: peer did not acknowledge everything sent: %w", post.ErrTimeout, ctx.Err())
		c.teardown(post.Errorf(post.ErrClosed, "fsp: connection closed: %v", err), true)
		return err
	}
}

// errLocalClose ends a connection closed in order by the application.
var errLocalClose = post.Errorf(post.ErrClosed, "fsp: connection closed")

// closedHere reports whether err ended the connection by a local Close
// or Abort that already reported its outcome.
func (c *Conn) closedHere(err error) bool {
	return err == errLocalClose || errors.Is(err, errAborted)
}

// closeFailed is the error of calls after a Close that failed with err.
type closeFailed struct{ err error }

func (e *closeFailed) Error() string { return "post: closed: fsp: close failed: " + e.err.Error() }

func (e *closeFailed) Unwrap() []error { return []error{post.ErrClosed, e.err} }

// errAborted marks the error of a connection ended by Abort.
var errAborted = errors.New("fsp: aborted")

// Abort ends the connection at once and tells the peer with a RESET; the
// peer's pending and later calls fail with an error wrapping
// post.ErrReset. Data not yet delivered is dropped. Blocked local calls
// return an error wrapping post.ErrClosed (and err, if not nil). Abort
// after Close or Abort does nothing.
func (c *Conn) Abort(err error) {
	c.teardown(&abortError{err: err}, true)
}

// abortError is the error of calls on a connection aborted with a cause.
type abortError struct{ err error }

func (e *abortError) Error() string {
	if e.err == nil {
		return "post: closed: fsp: aborted"
	}
	return "post: closed: fsp: aborted: " + e.err.Error()
}

func (e *abortError) Unwrap() []error {
	if e.err == nil {
		return []error{post.ErrClosed, errAborted}
	}
	return []error{post.ErrClosed, errAborted, e.err}
}

// dropUnread discards what was received and not read once Close began,
// and popInOrder discards what arrives in order from then on: the window
// stays open, so a peer that closes at the same time, its data unread,
// gets its RELEASE acknowledged rather than each waiting on the other's
// window until the linger. Called with c.mu held.
func (c *Conn) dropUnread() {
	for _, d := range c.readQ[c.readHead:] {
		c.freeRx(d.buf)
	}
	clear(c.readQ)
	c.readQ, c.readHead, c.readExtra, c.readOff, c.readMid = c.readQ[:0], 0, 0, 0, false
	c.dropAsm()
	c.ackNow = true // tell the peer the window opened
}

// teardown frees the connection. With reset it tells the peer by a
// protected RESET.
func (c *Conn) teardown(err error, reset bool) {
	c.mu.Lock()
	// Another goroutine may be sending a batch it built with c.mu
	// released, such as the acknowledgement of the peer's RELEASE: let it
	// leave first, or the caller may close the socket (and the process
	// exit) before it does, and the peer's Close time out.
	for c.sending && c.state != stateClosed {
		if c.sendIdle == nil {
			c.sendIdle = sync.NewCond(&c.mu)
		}
		c.sendWaited = true
		c.sendIdle.Wait()
	}
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	// Before the initiator of a 0-RTT resumption confirmed, only within
	// the amplification bound (conn_halfrtt.go).
	if reset && c.tx != nil && c.rcv != nil && c.ampRoom(overhead+1) {
		p := c.header(wire.Reset, 0, c.snd.Next())
		var reason []byte
		if errors.Is(err, post.ErrRefused) {
			reason = []byte{wire.ResetRefused}
		}
		if b := c.seal(&p, reason); b != nil {
			c.t.write(*b, &c.remote)
			putBuf(b)
		}
	}
	c.state, c.err = stateClosed, err
	c.ccLeave()
	if c.qlog != nil {
		c.traceClose(err)
	}
	c.log.Debug("fsp: connection closed", "local", c.local, "peer", c.peer, "remote", c.remote, "err", err)
	c.fineAt.Store(0)
	if c.timer != nil {
		c.timer.Stop()
	}
	for _, d := range c.readQ[c.readHead:] {
		c.freeRx(d.buf)
	}
	c.readQ, c.readHead, c.readExtra = nil, 0, 0
	c.putRxSpare()
	c.dropAsm()
	c.dropFragments()
	if c.rcv != nil && c.timeWait {
		// Time-wait goes on acknowledging: keep which packets arrived.
		c.rcv.Strip(func(d rxData) rxData { c.freeRx(d.buf); return rxData{} })
	} else if c.rcv != nil {
		c.rcv.Drain(func(d rxData) { c.freeRx(d.buf) })
	}
	if c.snd != nil {
		for seq := c.snd.Base(); seq < c.snd.Next(); seq++ {
			if e := c.snd.Get(seq); e != nil && e.Value.buf != nil {
				c.freeTx(e.Value.buf)
				e.Value.buf = nil
			}
		}
	}
	select {
	case <-c.established:
	default:
		c.hsFailed = true
		close(c.established)
	}
	close(c.done)
	c.uncharge()
	uncount := c.uncount
	c.uncount = nil
	parent, peer, forks := c.parent, c.peer, c.forks
	var linger time.Duration
	if c.timeWait {
		linger = min(max(4*c.rtt.RTO(), minTimeWait), maxTimeWait)
	}
	c.mu.Unlock()
	if uncount != nil {
		uncount()
	}
	// Clones the application never accepted are reset: the peer's
	// writes on them fail rather than vanish.
	for forks != nil {
		select {
		case cl := <-forks:
			cl.teardown(post.Errorf(post.ErrClosed, "fsp: parent closed before the clone was accepted"), true)
			continue
		default:
		}
		break
	}
	if linger > 0 {
		time.AfterFunc(linger, func() { c.forget(parent, peer) })
		return
	}
	c.forget(parent, peer)
}

// forget removes a closed connection from its transport and parent.
func (c *Conn) forget(parent *Conn, peer uint32) {
	if parent != nil {
		parent.mu.Lock()
		if parent.clones[peer] == c {
			delete(parent.clones, peer)
		}
		parent.mu.Unlock()
	}
	c.t.unregister(c)
}

// Time-wait: a connection closed in order stays known a while, so that
// the peer's data and RELEASE that arrive after our Close, or that it
// sends again because our last acknowledgement was lost, are acknowledged
// (and discarded, as unread data is at Close) instead of met by a RESET
// its Close could not take for success.
const (
	minTimeWait = 200 * time.Millisecond
	maxTimeWait = time.Second
)

// ackAfterClose answers an authenticated packet of the peer's during
// time-wait with a cumulative and selective acknowledgement; data it
// carries is counted as received and discarded. Called with c.mu held.
func (c *Conn) ackAfterClose(pkt *wire.Packet) {
	if pkt.Opcode == wire.Reset || pkt.Opcode == wire.KeepAlive && pkt.Flags&wire.FlagAckRequest == 0 {
		return // nothing owed; and no acknowledgement ping-pong
	}
	d := c.rx[0]
	if pkt.Flags&wire.FlagKeyPhase != 0 {
		d = c.rx[1]
	}
	if d == nil || c.snd == nil || len(pkt.Payload) > c.maxDatagram()-wire.HeaderLen {
		return
	}
	pn := wire.DecodeSeq(c.replay.Largest()+1, pkt.PN)
	if !c.replay.Check(pn) {
		return
	}
	buf := getBufFor(len(pkt.Payload))
	defer putBuf(buf)
	pt, err := c.open(d, (*buf)[:0], pn, pkt)
	if err != nil {
		return
	}
	c.replay.Mark(pn)
	switch pkt.Opcode {
	case wire.Ticket:
		c.onTicket(pt) // resent after our Close: still good for the next dial
	case wire.PureData, wire.Persist, wire.Release, wire.Multiply:
		exp := c.rcv.Expected()
		c.rcv.Insert(wire.DecodeSeq(exp, pkt.Seq), rxData{}, exp+uint64(c.window()))
		for {
			if _, ok := c.rcv.Pop(); !ok {
				break
			}
		}
	}
	p := c.header(wire.KeepAlive, 0, c.snd.Next())
	c.snack(&p, time.Now())
	if b := c.seal(&p, nil); b != nil {
		c.t.write(*b, &c.remote)
		putBuf(b)
	}
}

func (c *Conn) debugState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := fmt.Sprintf("%x->%x remote=%v state=%d ini=%v conf=%v readQ=%d peerRel=%v rtoAt=%v timerAt=%v ackReq=%v sending=%v probes=%d pn=%d", c.local, c.peer, c.remote, c.state, c.initiator, c.confirmed, c.readLen(), c.peerReleased, time.Until(c.rtoAt), time.Until(c.timerAt), c.ackReq, c.sending, c.probes, c.replay.Largest())
	if c.snd != nil {
		s += fmt.Sprintf(" milk=%v sndBytes=%d live=%d msgStart=%d newest=%d skipSent=%d asm=%d", c.milk, c.sndBytes, c.milkLive, c.msgStart, c.newest, c.skipSent, len(c.asm))
		s += fmt.Sprintf(" snd base=%d next=%d inflight=%d pending=%v peerLimit=%d cc=%s rcvExp=%d ooo=%d", c.snd.Base(), c.snd.Next(), c.snd.BytesInFlight(), c.snd.HasPending(), c.peerLimit, c.ccDebug(), c.rcv.Expected(), c.rcv.Buffered())
	}
	return s
}
