package fsp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/framer"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// ---- Receiving ----------------------------------------------------------

// handlePacket processes one datagram addressed to this connection, in
// the connection loop. It returns the connection (c or one of its clones)
// that has something to send: the loop then calls flush once per batch.
// A receiver that keeps in.buf sets it to nil. now is the loop's clock,
// read once for a run of packets (time.Now is dear on some hosts).
func (c *Conn) handlePacket(in *inPacket, pkt *wire.Packet, now time.Time) *Conn {
	c.mu.Lock()
	if c.peerKnown && pkt.Src != c.peer && c.state >= stateEstablished && pkt.Opcode > wire.AckConnectReq {
		c.mu.Unlock()
		return c.routeClone(in, pkt, now)
	}
	var op opened
	if c.openUnlocked(in, pkt, &op) {
		c.mu.Unlock()
		return nil
	}
	if in.buf == nil && in.lent != nil {
		// Not opened out of the socket's space: receivers keep only
		// buffers of their own.
		in.own(0)
		wire.Parse(in.bytes(), pkt)
	}
	var deliver *Listener
	c.receive(in, pkt, &deliver, &op, now)
	probe := c.unansweredReset(pkt)
	more := c.state == stateEstablished || c.state == stateClosing
	// Handed to Accept already, on its 0-RTT resumption.
	early := c.used0RTT && !c.initiator
	charged := c.bud != nil
	c.mu.Unlock()
	if probe {
		c.parent.probeForReset()
	}
	if deliver != nil {
		c.t.mu.Lock()
		c.t.pending.remove(c)
		c.t.mu.Unlock()
		switch {
		case !charged && !deliver.admit(c, in.from.ap.Addr()):
			// The budget filled during the handshake.
			c.teardown(post.Errorf(post.ErrRefused, "fsp: listener over its memory budget"), true)
			return nil
		case !early:
			deliver.deliver(c)
		}
	}
	if !more {
		return nil
	}
	return c
}

// opened is a protected packet decrypted in place before receive.
type opened struct {
	d  *fcrypto.Direction
	pn uint64
	pt []byte
}

// openUnlocked decrypts an established connection's protected packet in
// place with c.mu released, so writers and readers are not held up by
// the AEAD work; receive then checks the packet number again. It reports
// true when the packet failed to open and is dropped. Other packets are
// left for receive. Called with c.mu held; it holds it again on return.
func (c *Conn) openUnlocked(in *inPacket, pkt *wire.Packet, op *opened) bool {
	if c.state != stateEstablished && c.state != stateClosing || pkt.Opcode <= wire.AckConnectReq ||
		pkt.Opcode == wire.Reset && unauthenticatedReset(pkt) {
		return false
	}
	d := c.rx[0]
	if pkt.Flags&wire.FlagKeyPhase != 0 {
		d = c.rx[1]
	}
	if d == nil || c.tooLong(in.n, pkt) {
		return false
	}
	pn := wire.DecodeSeq(c.replay.Largest()+1, pkt.PN)
	if !c.replay.Check(pn) {
		return false // a replay: receive looks at it
	}
	lent := in.buf == nil && in.lent != nil
	var spare *[]byte
	if lent {
		spare = c.takeRx()
	}
	c.mu.Unlock()
	dst := pkt.Payload[:0]
	if lent {
		// Decrypt out of the socket's space into a buffer of its own:
		// no copy (pkt still points into the space, held until the loop
		// is done with the datagram).
		dst = in.ownInto(len(pkt.Payload), spare)
	}
	pt, err := c.open(d, dst, pn, pkt)
	c.mu.Lock()
	if err != nil {
		c.stats.PacketsDropped++
		return true
	}
	*op = opened{d: d, pn: pn, pt: pt}
	return false
}

// open decrypts pkt's payload with d into dst.
func (c *Conn) open(d *fcrypto.Direction, dst []byte, pn uint64, pkt *wire.Packet) ([]byte, error) {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	return d.Open(dst, pn, pkt.HeaderBytes, pkt.Payload)
}

func (c *Conn) receive(in *inPacket, pkt *wire.Packet, deliver **Listener, op *opened, now time.Time) {
	b, from := in.bytes(), &in.from
	switch c.state {
	case stateClosed:
		if c.timeWait {
			c.ackAfterClose(pkt)
		}
		return
	case stateInitiating, stateRequesting:
		if pkt.Opcode == wire.Reset {
			if c.onRefusal(b, pkt) {
				return
			}
			// Only a listener that saw our nonce can refuse us; any other
			// RESET is ignored until the handshake times out.
			if _, ok := fcrypto.VerifyHandshakeTag(fcrypto.RefusalKey(c.nonce[:]), b); ok {
				c.failLocked(post.Errorf(post.ErrRefused, "fsp: connection refused"))
			}
			return
		}
		if pkt.Opcode > wire.AckConnectReq {
			c.holdEarly(in) // 0.5-RTT data before the answer
			return
		}
		rs := c.resume
		c.onHandshakeReply(b, pkt, from.dst)
		if rs != nil && c.resume == nil && len(rs.held) > 0 {
			// Answered, or sent on to a full handshake.
			held := rs.held
			rs.held = nil
			c.replayHeld(held, deliver, now)
		}
		return
	}
	if pkt.Opcode <= wire.AckConnectReq {
		return // stray handshake packet
	}
	if pkt.Opcode == wire.Reset && c.statelessReset(pkt) {
		return
	}
	if pkt.Opcode == wire.Reset && unauthenticatedReset(pkt) && c.unprotectedReset(b) {
		return
	}
	d := c.rx[0]
	if pkt.Flags&wire.FlagKeyPhase != 0 {
		d = c.rx[1]
	}
	if op.d != nil && op.d != d {
		c.stats.PacketsDropped++ // the keys changed while it was opened
		return
	}
	if d == nil || c.tooLong(len(b), pkt) && pkt.Opcode != wire.ClientAuth && pkt.Opcode != wire.Ticket {
		c.stats.PacketsDropped++
		return
	}
	pn := wire.DecodeSeq(c.replay.Largest()+1, pkt.PN)
	if op.d != nil {
		pn = op.pn
	}
	if !c.replay.Check(pn) {
		c.stats.PacketsDropped++
		if op.d == nil {
			c.onDuplicate(d, pn, from, pkt)
		}
		return
	}
	// Decrypt in place: the datagram's buffer becomes the packet's.
	buf := in.buf
	pt := op.pt
	if op.d == nil {
		var err error
		if pt, err = c.open(d, pkt.Payload[:0], pn, pkt); err != nil {
			c.stats.PacketsDropped++
			return
		}
	}
	if c.state == stateAffirming && !c.affirm(pkt, pt) {
		return
	}
	if len(b) > MaxDatagramSize && pkt.Opcode != wire.ClientAuth && pkt.Opcode != wire.Ticket && !c.takeJumbo() {
		c.stats.PacketsDropped++
		return
	}
	c.stats.PacketsReceived++
	c.stats.BytesReceived += uint64(len(b))
	newest := pn >= c.replay.Largest()
	c.replay.Mark(pn)
	c.lastRecv = now
	c.idleGrace = 0
	if c.state == stateAffirming || c.halfOpen() {
		c.handshakeRTT() // before the ticket, which records it
		if c.state == stateAffirming {
			c.establish(now)
			c.issueTicket(now)
		} else {
			c.confirmHalf(now) // its ticket left with the answer
		}
		c.hsPacket, c.hsFlight = nil, nil
		*deliver = c.listener
		close(c.established)
	}
	c.onPathPacket(from, len(b), newest, pkt, now)
	if c.qlog != nil {
		c.qlog.received(now, pn, pkt, len(pt))
	}
	if pkt.Flags&flagHalfRTT == 0 {
		// Sent once the responder had our confirmation; its 0.5-RTT
		// data (conn_halfrtt.go) says nothing of that, so we go on
		// asking.
		c.confirmed = true
		if c.authWait && pkt.Opcode != wire.Reset {
			c.authWait = false // the responder accepted our CLIENT_AUTH
			c.openEstablished()
		}
		if c.initiator && c.ackReq && c.snd.Len() == 0 {
			c.rtoAt = time.Time{}
		}
		c.ackReq = false
	}

	c.onAck(now, pkt)
	c.onCredit(pkt)
	keep := false
	if !c.peerKnown {
		c.peer, c.peerKnown = pkt.Src, true // the peer's clone answered
	}
	c.onTokenFlags(pkt, pt)
	c.onTicketAck(pkt)
	if pkt.HasSkip && !c.milk && c.parent != nil && c.stats.PacketsReceived == 1 {
		c.setMilk() // the peer forked a milk clone; a root stays wine
	}
	if c.milk && pkt.HasSkip {
		c.skipTo(wire.DecodeSeq(c.rcv.Expected(), pkt.Skip))
	}
	switch pkt.Opcode {
	case wire.Multiply:
		if len(pt) > 0 || pkt.Flags&wire.FlagEOT != 0 {
			keep = c.onData(now, pkt, buf, pt)
		} else if pkt.Flags&wire.FlagAckRequest != 0 {
			c.ackNow = true // an announcement without data
		}
	case wire.PureData, wire.Persist, wire.Release:
		keep = c.onData(now, pkt, buf, pt)
	case wire.KeepAlive:
		if pkt.Flags&wire.FlagAckRequest != 0 {
			c.ackNow = true
		}
	case wire.ClientAuth:
		c.ackNow = true // confirm it (again)
	case wire.Ticket:
		c.onTicket(pt)
	case wire.Reset:
		switch {
		case len(pt) > 0 && pt[0] == wire.ResetAuthentication:
			c.failLocked(post.Errorf(post.ErrAuthentication, "fsp: the peer refused our credentials"))
			return
		case len(pt) > 0 && pt[0] == wire.ResetRefused:
			c.failLocked(post.Errorf(post.ErrRefused, "fsp: the peer refused the connection"))
			return
		}
		c.failLocked(post.Errorf(post.ErrReset, "fsp: connection reset by peer"))
		return
	}
	if keep {
		in.buf = nil // the loop frees it otherwise
	}
}

// onData buffers a data packet; it reports whether buf was kept.
func (c *Conn) onData(now time.Time, pkt *wire.Packet, buf *[]byte, pt []byte) bool {
	seq := wire.DecodeSeq(c.rcv.Expected(), pkt.Seq)
	if pkt.HasFragment {
		if seq >= c.rcv.Expected() {
			c.onDataHeard(now)
		}
		c.onFragment(now, seq, pkt, pt)
		return false
	}
	inOrder := seq == c.rcv.Expected()
	d := rxData{buf: buf, data: pt, eot: pkt.Flags&wire.FlagEOT != 0, release: pkt.Opcode == wire.Release,
		abort: pkt.Flags&wire.FlagAbort != 0}
	exp := c.rcv.Expected()
	limit := exp + uint64(c.window())
	if d.abort {
		// Beyond the window by one (conn_send.go, sendLimit): the marker
		// frees what the aborted message holds.
		d.data, limit = nil, limit+1
	}
	if c.rxJumbo {
		limit = max(limit, c.rcvEdge) // the window's end never retreats
		if !c.milk && len(d.data) > MaxPayload && seq >= exp+c.jumboRoom(len(d.data)) {
			// A jumbo packet past the window's bytes: the peer ignored
			// jumboLimit. Dropped unacknowledged.
			c.stats.PacketsDropped++
			return false
		}
	}
	if seq >= exp && seq < limit && (isJumbo(buf) && !c.holdJumbo() || !c.holdFor(seq)) {
		// No room in the memory budget: dropped unacknowledged, as the
		// network might have; the sender retransmits it.
		c.stats.BudgetDropped++
		return false
	}
	kept := c.rcv.Insert(seq, d, limit)
	if kept {
		c.keepRx(buf)
		c.onWindowData(seq)
		if !d.release {
			c.onDataHeard(now)
		}
	}
	if !kept && seq < limit {
		c.stats.Duplicates++
	}
	c.ackPending++
	if !kept || !inOrder || c.rcv.HasGaps() || d.release || pkt.Flags&wire.FlagAckRequest != 0 {
		c.ackNow = true
	}
	if kept && seq >= c.rcv.Largest() {
		c.largestAt = now
	}
	if c.tuneAt.IsZero() {
		c.tuneAt = now // the first auto-tuning epoch starts with the data
	}
	c.popInOrder()
	if kept && inOrder && pkt.Flags&wire.FlagAckRequest != 0 && !c.rcv.HasGaps() && c.readLen() > 0 {
		c.replyWait.Store(true)
	}
	if c.ackPending >= ackEvery {
		c.ackNow = true
	} else if c.ackAt.IsZero() {
		c.ackAt = now.Add(maxAckDelay)
	}
	return kept
}

// popInOrder moves the in-order packets to the read queue. On a milk
// connection only complete messages go there, the oldest unread ones
// evicted when the queue is full.
func (c *Conn) popInOrder() {
	popped := false
	for {
		v, ok := c.rcv.Pop()
		if !ok {
			break
		}
		if v.release {
			c.freeRx(v.buf)
			if !c.peerReleased {
				close(c.peerEnded) // AcceptFork ends
			}
			c.peerReleased = true
			c.dropAsm()
			popped = true
			signal(c.writable) // a writer waiting for room fails now
			signal(c.forkable) // and a Fork waiting for credit
			continue
		}
		if c.state == stateClosing {
			c.freeRx(v.buf) // Close discards unread data (dropUnread)
			continue
		}
		if v.abort {
			c.freeRx(v.buf)
			c.stats.AbortsReceived++
			c.abortRead()
			popped = true
			continue
		}
		if !c.milk {
			c.pushRead(v)
			popped = true
			continue
		}
		c.asm = append(c.asm, v)
		if v.eot {
			for i, d := range c.asm {
				c.pushRead(d)
				c.asm[i] = rxData{}
			}
			c.asm = c.asm[:0]
			c.evict()
			popped = true
		}
	}
	if popped {
		signal(c.readable)
	}
}

// errMessageAborted is ReadMessage's error for a message the peer
// aborted: it wraps framer.ErrAborted (and so post.ErrReset), which the
// Carrier knows as one message reset, the transient going on.
var errMessageAborted = fmt.Errorf("fsp: %w", framer.ErrAborted)

// abortRead handles the peer's abort marker: the unread part of the
// message in progress is dropped, and on a wine connection the reader
// gets an error wrapping post.ErrReset in its place (once). A milk reader,
// which only gets whole messages, never sees the aborted one.
func (c *Conn) abortRead() {
	if c.milk {
		c.dropAsm()
		return
	}
	for c.readLen() > 0 && !c.readQ[len(c.readQ)-1].eot {
		last := len(c.readQ) - 1
		c.readExtra -= extraBytes(&c.readQ[last])
		c.freeRx(c.readQ[last].buf)
		c.readQ[last] = rxData{}
		c.readQ = c.readQ[:last]
	}
	if c.readLen() == 0 {
		c.readQ, c.readHead, c.readOff = c.readQ[:0], 0, 0
	}
	c.pushRead(rxData{eot: true, abort: true})
}

func (c *Conn) dropAsm() {
	for i, d := range c.asm {
		c.freeRx(d.buf)
		c.asm[i] = rxData{}
	}
	c.asm = c.asm[:0]
}

// evict drops the oldest complete messages the reader has not begun while
// the read queue holds more than the receive buffer, never the newest.
func (c *Conn) evict() {
	for c.readLen() > c.rcvCap {
		i := c.readHead
		if c.readMid || c.readOff > 0 {
			for i < len(c.readQ) && !c.readQ[i].eot {
				i++
			}
			i++ // the message being read stays
		}
		j := i
		for j < len(c.readQ) && !c.readQ[j].eot {
			j++
		}
		if j >= len(c.readQ)-1 {
			return // the newest message stays
		}
		for k := i; k <= j; k++ {
			c.readExtra -= extraBytes(&c.readQ[k])
			c.freeRx(c.readQ[k].buf)
		}
		n := copy(c.readQ[i:], c.readQ[j+1:])
		clear(c.readQ[i+n:])
		c.readQ = c.readQ[:i+n]
		c.stats.Evicted++
	}
}

// skipTo stops waiting for the sequence numbers below seq, which the
// milk sender superseded: buffered packets below it and the incomplete
// message are dropped.
func (c *Conn) skipTo(seq uint64) {
	exp := c.rcv.Expected()
	if seq <= exp {
		return
	}
	c.stats.Skipped += seq - exp
	c.rcv.SkipTo(seq, func(d rxData) { c.freeRx(d.buf) })
	c.dropAsm()
	c.ackNow = true
	c.popInOrder()
}

// setMilk makes c a milk-class connection.
func (c *Conn) setMilk() {
	c.milk = true
	// Milk messages must fit the window whole: no auto-tuning.
	c.growWindow(c.rcvMax)
	c.maxPayload = basePayload - wire.SkipLen
	c.milkLive, c.msgStart, c.newest = 1, 1, 1
	if c.snd != nil {
		c.milkLive, c.msgStart, c.newest = c.snd.Next(), c.snd.Next(), c.snd.Next()
	}
}

// window is the receive window in packets beyond the expected sequence
// number.
func (c *Conn) window() int {
	if c.milk {
		// Complete messages waiting to be read never close the window:
		// older ones are evicted for newer ones.
		return max(c.rcvCap-len(c.asm), 0)
	}
	return max(c.rcvCap-c.readLen()-(c.readExtra+MaxPayload-1)/MaxPayload, 0)
}

// autoTune doubles the receive window, up to its maximum, when the
// reader consumed half of it within
// about two round trips: the window, not the reader, then limits the
// transfer. The window never shrinks. Called with c.mu held.
func (c *Conn) autoTune(now time.Time) {
	if c.rcvCap >= c.rcvMax || c.tuneAt.IsZero() {
		return
	}
	read := c.readCount - c.tuneRead
	if read < uint64(c.rcvCap/2) {
		return
	}
	// Consuming the fraction read/rcvCap of the window in less than
	// 4·RTT·fraction means the whole window goes in about two round
	// trips or less. The round trip a window update takes includes the
	// peer's acknowledgement delay, which a receiver's own samples (the
	// handshake's) do not.
	rtt := c.rtt.SmoothedRTT() + maxAckDelay
	limit := time.Duration(4 * float64(rtt) * float64(read) / float64(c.rcvCap))
	if now.Sub(c.tuneAt) < limit {
		c.growWindow(min(2*c.rcvCap, c.rcvMax))
	}
	c.tuneAt, c.tuneRead = now, c.readCount
}

// growWindow raises the receive window to n packets. The budget is
// charged only as packets fill it (hold). Called with c.mu held.
func (c *Conn) growWindow(n int) {
	c.rcvCap = max(c.rcvCap, n)
}

func (c *Conn) readLen() int { return len(c.readQ) - c.readHead }

// recycleRx keeps a buffer ReadMessage has emptied for the loop to
// decrypt the next lent datagram into (openUnlocked), at most maxBatch of
// them, so that a bulk receiver's buffers go round the connection
// instead of through sync.Pool, between the reader's and the loop's
// cores; compact gives them back. On a listener a spare takes the room
// the budget already holds for c (needed counts it, and rxBig a jumbo
// one), never more: it is kept only while that room covers it. Called
// with c.mu held, before the packet it held leaves the read queue.
func (c *Conn) recycleRx(b *[]byte) {
	if b == nil {
		return
	}
	if len(c.rxSpare) < maxBatch && c.state == stateEstablished && (c.bud == nil || c.needed() <= c.held && c.rxBig <= c.bigHeld) {
		c.rxSpare = append(c.rxSpare, b)
		return
	}
	c.freeRx(b)
}

// takeRx returns a buffer recycleRx kept, or nil. Called with c.mu held.
func (c *Conn) takeRx() *[]byte {
	n := len(c.rxSpare)
	if n == 0 {
		return nil
	}
	b := c.rxSpare[n-1]
	c.rxSpare[n-1] = nil
	c.rxSpare = c.rxSpare[:n-1]
	c.dropRx(b) // the loop's now, until a packet keeps it
	return b
}

// putRxSpare gives the buffers recycleRx kept back to the pool. Called
// with c.mu held.
func (c *Conn) putRxSpare() {
	for i, b := range c.rxSpare {
		c.freeRx(b)
		c.rxSpare[i] = nil
	}
	c.rxSpare = nil
}

func (c *Conn) pushRead(v rxData) {
	if len(c.readQ) == cap(c.readQ) && c.readHead > len(c.readQ)/2 {
		n := copy(c.readQ, c.readQ[c.readHead:])
		clear(c.readQ[n:])
		c.readQ, c.readHead = c.readQ[:n], 0
	}
	c.readQ = append(c.readQ, v)
	c.readExtra += extraBytes(&v)
}

func (c *Conn) popRead() {
	c.readExtra -= extraBytes(&c.readQ[c.readHead])
	c.readQ[c.readHead] = rxData{}
	c.readHead++
	if c.readHead == len(c.readQ) {
		// Keep the capacity: regrowing it every burst was most of the
		// bulk path's allocation. Close frees it.
		c.readHead = 0
		c.readQ = c.readQ[:0]
	}
}

// ReadMessage reads from the current inbound message into p; end is true
// when the returned bytes complete the message. After the peer released
// the connection and everything was read it returns io.EOF.
func (c *Conn) ReadMessage(ctx context.Context, p []byte) (n int, end bool, err error) {
	c.mu.Lock()
	for {
		if c.readLen() > 0 {
			// Copy as many queued packets of the current message as fit.
			for c.readLen() > 0 {
				d := &c.readQ[c.readHead]
				if d.abort {
					if n > 0 {
						break
					}
					c.popRead()
					c.readCount++
					c.readOff, c.readMid = 0, false
					c.mu.Unlock()
					return 0, false, errMessageAborted
				}
				k := copy(p[n:], d.data[c.readOff:])
				n += k
				c.readOff += k
				if c.readOff < len(d.data) {
					break
				}
				end = d.eot
				c.recycleRx(d.buf)
				c.popRead()
				c.readCount++
				c.readOff = 0
				if end || n == len(p) {
					break
				}
			}
			c.readMid = !end
			c.autoTune(time.Now())
			// Announce a window that grew by a quarter or more.
			if c.state == stateEstablished && c.rcv.Expected()+uint64(c.window()) >= c.advLimit+uint64(c.rcvCap/4) {
				c.noteWindowOpened(time.Now())
				c.ackNow = true
				c.trySend()
			}
			c.mu.Unlock()
			return n, end, nil
		}
		if c.peerReleased {
			c.mu.Unlock()
			return 0, false, io.EOF
		}
		if c.state == stateClosed {
			err := c.stateErr()
			c.mu.Unlock()
			return 0, false, err
		}
		c.mu.Unlock()
		if err := c.wait(ctx, c.readable); err != nil {
			return 0, false, err
		}
		c.mu.Lock()
	}
}

// wholeRead is what ReceiveMessage keeps of the message in progress when a
// call returns before its end: the bytes read so far, or that the rest of
// a message over the limit is to be discarded.
type wholeRead struct {
	part []byte
	skip bool
}

// ReceiveMessage reads one whole message, up to Config.MaxMessageSize. A
// larger message fails with an error wrapping post.ErrMessageTooLarge and
// is discarded; bytes read before ctx ends are kept for the next call, so
// a call never returns the rest of a message as a whole one.
func (c *Conn) ReceiveMessage(ctx context.Context) ([]byte, error) {
	w := &c.whole
	limit := c.cfg.maxMessage()
	buf := make([]byte, MaxPayload)
	for {
		n, end, err := c.ReadMessage(ctx, buf)
		if errors.Is(err, post.ErrReset) {
			w.part, w.skip = nil, false
			return nil, err // a complete-message reader never sees an aborted part
		}
		if err != nil {
			return nil, err
		}
		if w.skip {
			w.skip = !end
			continue
		}
		if int64(len(w.part)+n) > limit {
			w.part, w.skip = nil, !end
			return nil, post.Errorf(post.ErrMessageTooLarge, "fsp: message over %d bytes", limit)
		}
		w.part = append(w.part, buf[:n]...)
		if end {
			msg := w.part
			w.part = nil
			if msg == nil {
				msg = []byte{}
			}
			return msg, nil
		}
	}
}

// unauthenticatedReset reports whether a RESET has the length of an
// unauthenticated one: a tag alone (a plain RESET), or a reset token and
// a tag (a stateless reset). A protected RESET without a reason is as
// long as a plain one.
func unauthenticatedReset(pkt *wire.Packet) bool {
	_, stateless := wire.StatelessResetToken(pkt)
	return stateless || len(pkt.Payload) == fcrypto.TagLen
}

// unprotectedReset takes a RESET whose payload is a tag alone when the tag
// proves it an unauthenticated one from the peer's stack, and reports
// whether it did. The peer's protected RESET without a reason is as long:
// one that fails the tag is opened as a protected packet next (dropping
// it lost a peer's Abort that crossed our RELEASE, and Close waited out
// its linger).
func (c *Conn) unprotectedReset(b []byte) bool {
	// Believed when closing with all data acknowledged (the peer already
	// forgot the connection); while waiting for the listener to confirm
	// CLIENT_AUTH, as during the rest of the handshake (it refused us and
	// lost the protected refusal, or it restarted); or before the
	// listener's first protected packet (it gave up the handshake, its
	// HandshakeTimeout or an eviction from its pending table, after its
	// answer left, and forgot us; without this the connection would wait
	// for the idle timeout).
	released := c.state == stateClosing && c.sentRelease && c.snd.Base() >= c.releaseSeq
	dropped := c.initiator && !c.confirmed && c.parent == nil
	if !released && !c.authWait && !dropped {
		return false
	}
	if _, ok := fcrypto.VerifyHandshakeTag(fcrypto.HandshakeKey(c.cfg.Security.PSK, c.local), b); !ok {
		return false
	}
	switch {
	case released:
		c.releaseDone()
	case c.authWait:
		c.failLocked(post.Errorf(post.ErrRefused, "fsp: the listener dropped the connection before confirming CLIENT_AUTH"))
	default:
		c.failLocked(post.Errorf(post.ErrReset, "fsp: the listener dropped the handshake before confirming it"))
	}
	return true
}
