package fsp

import (
	"context"
	"time"

	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// flush sends what the received packets called for and runs the
// acknowledgement callbacks. Called by the connection loop.
func (c *Conn) flush() {
	c.mu.Lock()
	c.trySend()
	fns := c.ackedFns
	c.ackedFns = nil
	c.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

// ---- Sending ------------------------------------------------------------

// trySend sends what the windows, the pacer and pending acknowledgements
// allow. Called with c.mu held; it drops the lock while writing.
func (c *Conn) trySend() {
	if c.sending {
		c.sendAgain = true
		return
	}
	c.sending = true
	for c.state == stateEstablished || c.state == stateClosing {
		c.sendAgain = false
		now := time.Now()
		c.fill(now)
		if len(c.out) == 0 {
			break
		}
		to := c.remote
		out, jobs, tx := c.out, c.outJobs, c.tx
		c.mu.Unlock()
		if h := c.t.sendHook.Load(); h != nil {
			(*h)()
		}
		out = sealOut(tx, out, jobs)
		c.t.writeBatch(out, &to)
		for _, b := range out {
			putBuf(b)
		}
		c.mu.Lock()
		clear(out)
		clear(jobs)
		c.outJobs = jobs[:0]
		c.freeSealed()
		full := len(out) >= maxBatch
		c.out = out[:0]
		if !full && !c.sendAgain {
			break
		}
	}
	c.sending = false
	if c.sendWaited {
		c.sendWaited = false
		c.sendIdle.Broadcast()
	}
	c.freeSealed()
	c.pmtuWake()
	c.unsentWake()
	c.armTimer()
}

// freeSealed returns the buffers freeTx held back while trySend sealed.
// Called with c.mu held, when no packet is being sealed.
func (c *Conn) freeSealed() {
	for i, b := range c.txFree {
		c.recycleTx(b)
		c.txFree[i] = nil
	}
	c.txFree = c.txFree[:0]
}

// fill builds up to maxBatch packets into c.out.
func (c *Conn) fill(now time.Time) {
	if c.out == nil {
		c.out = make([]*[]byte, 0, maxBatch)
	}
	for len(c.out) < maxBatch {
		probe := c.probes > 0
		// Only data ready to go asks the shared window: a clone with
		// nothing to send is not noted blocked, or the window's opening
		// would wake it instead of one that waits (conn_cc.go).
		if !probe && c.sendable() {
			ok, d := c.ccCanSend(now)
			if !ok {
				break
			}
			// Delays below the timer granularity are not worth a timer:
			// send now and let the pacer run into debt, as quic-go does.
			if d > minPacingDelay {
				c.paceAt = now.Add(d)
				break
			}
		}
		if !c.dataFits() {
			break // 0.5-RTT data beyond the amplification bound waits
		}
		e := c.snd.NextToSend(c.sendLimit())
		if e == nil {
			c.ccPassOn()
			if c.milk && c.snd.PeekNew() != nil && c.skipSent < c.milkLive {
				// Blocked by the peer's window, which superseded data may
				// fill: tell it the skip point and ask for an update.
				c.ackReq = true
			}
			if c.snd.PeekNew() != nil && c.rtoAt.IsZero() {
				// Blocked by the peer's window: probe if no update comes.
				c.rtoAt = now.Add(c.rto())
			}
			break
		}
		if probe {
			c.probes--
		}
		c.sendData(now, e)
	}
	if c.earlyResp == nil {
		c.pmtuTick(now) // no probes before the initiator confirmed
	}
	if (c.ackReq || len(c.resps) > 0 || c.ackNow && len(c.out) < maxBatch) && c.ampRoom(ackBufferBytes) {
		if c.authWait {
			c.sendClientAuth()
		} else {
			c.sendAck(now)
			for len(c.resps) > 0 && len(c.out) < maxBatch {
				c.sendAck(now) // one PATH_RESPONSE a packet
			}
		}
	}
}

// sendable reports whether NextToSend has an entry for fill: a
// retransmission, or new data the peer's window takes.
func (c *Conn) sendable() bool {
	if c.snd.HasRetransmission() {
		return true
	}
	e := c.snd.PeekNew()
	return e != nil && e.Seq < c.sendLimit()
}

// sendLimit is the flow-control limit for new data: the peer's, one more
// for an abort marker, which the receiver takes beyond its window since
// it frees the window the aborted message holds, and less for a jumbo
// packet (jumboLimit).
func (c *Conn) sendLimit() uint64 {
	e := c.snd.PeekNew()
	switch {
	case e == nil:
		return c.peerLimit
	case e.Seq == c.peerLimit && e.Value.flags&wire.FlagAbort != 0:
		return c.peerLimit + 1
	}
	if e.Value.n > MaxPayload && !c.milk {
		return min(c.peerLimit, jumboLimit(c.peerExp, c.peerWin, maxJumboPayload))
	}
	return c.peerLimit
}

func (c *Conn) phaseFlag() uint8 {
	if c.keyGen&1 != 0 {
		return wire.FlagKeyPhase
	}
	return 0
}

func (c *Conn) header(op wire.Opcode, flags uint8, seq uint64) wire.Packet {
	lim := c.rcv.Expected() + uint64(c.window())
	c.advLimit = lim
	c.rcvEdge = max(c.rcvEdge, lim)
	if c.milk {
		c.skipSent = c.milkLive
	}
	if !c.peerKnown && (op == wire.PureData || op == wire.KeepAlive) {
		op = wire.Multiply
	}
	return wire.Packet{Header: wire.Header{
		Opcode:   op,
		Flags:    flags | c.phaseFlag() | c.halfFlag() | c.tokenFlag() | c.ticketFlag(),
		Window:   uint32(min(c.window(), wire.MaxWindow)),
		Seq:      uint32(seq),
		Expected: uint32(c.rcv.Expected()),
		PN:       uint32(c.pn),
		Dst:      c.peer,
		Src:      c.local,
	}, HasSkip: c.milk, Skip: uint32(c.milkLive)}
}

func (c *Conn) seal(p *wire.Packet, payload []byte) *[]byte {
	pn := c.pn
	c.pn++
	c.stats.PacketsSent++
	if c.qlog != nil {
		c.qlog.sent(pn, p, len(payload))
	}
	b := getBufFor(len(payload) + sealRoom)
	hdr := wire.AppendHeader((*b)[:0], p)
	out, err := c.tx.Seal(hdr, pn, hdr, payload)
	if err != nil {
		putBuf(b)
		return nil
	}
	*b = out[:len(out):cap(out)]
	c.stats.BytesSent += uint64(len(out))
	c.ampSent(len(out))
	return b
}

// sealRoom is what a packet adds to its payload: the header with any
// extensions and the AEAD tag, with room to spare. A full packet of
// MaxDatagramSize with it fits a small buffer (smallBufSize).
const sealRoom = wire.HeaderLen + 40 + fcrypto.TagLen

// sealJob is a packet of c.out whose header is built, for trySend to
// seal with its payload once it dropped c.mu.
type sealJob struct {
	idx     int // in c.out
	pn      uint64
	payload []byte // in a send-queue buffer, which freeTx keeps until sealed
}

// queueOut builds p's header into c.out under the next packet number;
// trySend seals the payload after it outside the lock, reading it where
// it is: a data packet's buffer is not freed meanwhile (freeTx). Called
// with c.mu held.
func (c *Conn) queueOut(p *wire.Packet, payload []byte) {
	pn := c.pn
	c.pn++
	c.stats.PacketsSent++
	if c.qlog != nil {
		c.qlog.sent(pn, p, len(payload))
	}
	b := getBufFor(len(payload) + sealRoom)
	*b = wire.AppendHeader((*b)[:0], p)
	c.stats.BytesSent += uint64(len(*b) + len(payload) + fcrypto.TagLen)
	c.ampSent(len(*b) + len(payload) + fcrypto.TagLen)
	c.outJobs = append(c.outJobs, sealJob{idx: len(c.out), pn: pn, payload: payload})
	c.out = append(c.out, b)
}

// freeTx returns a send-queue buffer to the pool, or, while trySend may
// be sealing from it outside the lock, leaves that to trySend. Called
// with c.mu held.
func (c *Conn) freeTx(b *[]byte) {
	if c.sending {
		c.txFree = append(c.txFree, b)
		return
	}
	c.recycleTx(b)
}

// recycleTx keeps a freed send-queue buffer for writeMessage's next batch
// while the connection has data queued, so that a bulk sender's buffers
// go round the connection instead of through the shared pool, between
// the writer's and the loop's cores; otherwise the spare buffers go back
// to the pool. While a bulk write is under way, the spares and the
// queued data together may fill the send buffer (one acknowledgement
// frees hundreds of packets); otherwise 2*maxBatch spares are kept. Past
// that only b goes back. Called with c.mu held.
func (c *Conn) recycleTx(b *[]byte) {
	if c.state != stateEstablished || c.writing == 0 && (c.snd == nil || c.snd.Len() == 0) {
		putBuf(b)
		c.putSpare(true)
		return
	}
	if len(c.txSpare) < 2*maxBatch || c.writing > 0 && c.sndBytes+(len(c.txSpare)+1)*cap(*b) <= c.sndLimit {
		c.txSpare = append(c.txSpare, b)
		return
	}
	putBuf(b)
}

// putSpare returns the spare send buffers to the pool if always is set
// or the connection has nothing to send and no bulk writer. Called with
// c.mu held.
func (c *Conn) putSpare(always bool) {
	if !always && (c.writing > 0 || c.snd != nil && c.snd.Len() > 0) {
		return
	}
	for i, s := range c.txSpare {
		putBuf(s)
		c.txSpare[i] = nil
	}
	c.txSpare = c.txSpare[:0]
}

// takeSpare moves spare send buffers into dst and returns how many.
// Called with c.mu held.
func (c *Conn) takeSpare(dst []*[]byte) int {
	k := len(c.txSpare) - min(len(c.txSpare), len(dst))
	n := copy(dst, c.txSpare[k:])
	clear(c.txSpare[k:])
	c.txSpare = c.txSpare[:k]
	return n
}

// sealOut seals the packets of out that jobs name with tx, appending the
// encrypted payload to each header, and returns out without any that
// failed. tx is safe for concurrent sealing
// and the packets are trySend's own: no lock is needed.
func sealOut(tx *fcrypto.Direction, out []*[]byte, jobs []sealJob) []*[]byte {
	failed := false
	for _, j := range jobs {
		b := out[j.idx]
		sealed, err := tx.Seal(*b, j.pn, *b, j.payload)
		if err != nil {
			putBuf(b)
			out[j.idx], failed = nil, true
			continue
		}
		*b = sealed[:len(sealed):cap(sealed)]
	}
	if !failed {
		return out
	}
	k := 0
	for _, b := range out {
		if b != nil {
			out[k] = b
			k++
		}
	}
	clear(out[k:])
	return out[:k]
}

func (c *Conn) sendData(now time.Time, e *reliability.Entry[txData]) {
	flags := e.Value.flags
	// A resend asks for an immediate acknowledgement too, as a probe in
	// RFC 9002 is acknowledged at once: it keeps the lost packet's
	// sequence number, so the peer sees no gap (a QUIC receiver sees one
	// in the new packet number) and would delay its acknowledgement.
	e.Value.asked = e.Sent || c.askAck(e)
	if e.Value.asked {
		flags |= wire.FlagAckRequest
	}
	p := c.header(e.Value.op, flags, e.Seq)
	var payload []byte
	if e.Value.buf != nil {
		payload = (*e.Value.buf)[:e.Value.n]
	}
	pn := c.pn
	if c.qlog != nil {
		c.qlog.retx = e.Sent
	}
	e.Value.big = c.isBig(len(payload))
	if room := c.dataRoom(&p); len(payload) > room {
		pn = c.sendFragments(&p, payload, room) // packetized before the path MTU fell
	} else {
		c.queueOut(&p, payload)
	}
	if e.Sent {
		c.stats.Retransmissions++
		e.Value.prevSent = e.SentAt
	}
	c.snd.OnSent(e, now)
	e.Value.pn = pn
	e.Value.path = c.active
	if c.active != nil {
		c.active.sent++
	}
	e.Value.gpn = c.ccSent(now, e.Bytes)
	if c.rtoAt.IsZero() {
		c.rtoAt = now.Add(c.lossTimeout())
	}
	if c.lastProgress.IsZero() {
		c.lastProgress = now // the dead-peer clock starts with the data
	}
	// The packet carries the cumulative acknowledgement.
	c.ackPending = 0
	c.ackAt = time.Time{}
	if !c.rcv.HasGaps() {
		c.ackNow = false
	}
}

// sendAck sends a KEEP_ALIVE with a SELECTIVE_NACK header.
func (c *Conn) sendAck(now time.Time) {
	var flags uint8
	if c.ackReq {
		flags = wire.FlagAckRequest
	}
	p := c.header(wire.KeepAlive, flags, c.snd.Next())
	c.snack(&p, now)
	if c.acceptsForks {
		p.HasCredit, p.Credit = true, uint32(c.forkCredit)
		c.creditSent = c.forkCredit
	}
	if len(c.resps) > 0 {
		p.HasResponse, p.Response = true, c.resps[0]
		c.resps = c.resps[1:]
	}
	c.queueOut(&p, c.ackPayload(&p.Flags))
	c.ackNow, c.ackReq = false, false
	c.ackPending = 0
	c.ackAt = time.Time{}
}

// snack adds the SELECTIVE_NACK header: the gaps in what was received.
func (c *Conn) snack(p *wire.Packet, now time.Time) {
	p.HasSNACK = true
	p.SNACK.Latest = uint32(c.rcv.Largest())
	if !c.largestAt.IsZero() {
		p.SNACK.AckDelay = uint32(min(now.Sub(c.largestAt).Microseconds(), 1<<31))
	}
	c.gapsOut = c.rcv.Gaps(c.gapsOut[:0], wire.MaxGaps)
	c.wgaps = c.wgaps[:0]
	for _, g := range c.gapsOut {
		c.wgaps = append(c.wgaps, wire.Gap{Gap: uint32(min(g.Gap, 1<<32-1)), Data: uint32(min(g.Data, 1<<32-1))})
	}
	p.SNACK.Gaps = c.wgaps
}

// WriteMessage appends p to the current outbound message (transmit
// transaction); end completes it, so the peer reads it as one message. It
// blocks while the send buffer is full.
func (c *Conn) WriteMessage(ctx context.Context, p []byte, end bool) error {
	if done, err := c.writeEarly(ctx, p, end, nil, true); done || err != nil {
		return err
	}
	return c.writeMessage(ctx, p, end, nil, false)
}

// Flush sends what writes with more set held back.
func (c *Conn) Flush() {
	c.mu.Lock()
	c.trySend()
	c.mu.Unlock()
}

// writeMessage is WriteMessage that calls acked once the peer
// acknowledged the whole message. With more, it queues the packets
// without sending them, so several messages leave in one batch; a later
// write without more, or Flush, sends them.
func (c *Conn) writeMessage(ctx context.Context, p []byte, end bool, acked func(), more bool) error {
	if err := ctx.Err(); err != nil {
		return err // a cancelled write sends nothing
	}
	if len(p) == 0 && !end {
		return nil
	}
	// Copy into packet buffers outside the lock, a batch at a time, so
	// the read loop is not held up by large writes.
	var staged [maxBatch]txData
	var spare [maxBatch]*[]byte // buffers acknowledged meanwhile (takeSpare)
	ns, whole := 0, len(p)
	if len(p) > c.writePayload() {
		// A bulk write: acknowledged buffers are kept for it (recycleTx).
		c.mu.Lock()
		c.writing++
		ns = c.takeSpare(spare[:min((len(p)+c.writePayload()-1)/c.writePayload(), maxBatch)])
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.writing--
			c.putSpare(false) // to the pool if nothing is left to send
			c.mu.Unlock()
			releaseSpare(spare[:ns])
		}()
	}
	pushed := false
	share := 0 // bytes a packet of this write takes (packetShare)
	for !pushed || len(p) > 0 {
		k := 0
		for k < maxBatch && (!pushed || len(p) > 0) {
			if lim := c.writePayload(); share == 0 || share > lim {
				share = packetShare(len(p), lim)
			}
			n := min(len(p), share)
			d := txData{n: n, op: wire.PureData}
			if n > 0 {
				if ns > 0 {
					ns--
					d.buf, spare[ns] = spare[ns], nil
					if !fits(d.buf, n) { // a spare of the other size
						putBuf(d.buf)
						d.buf = getBufFor(n)
					}
				} else {
					d.buf = getBufFor(n)
				}
				copy((*d.buf)[:n], p)
			}
			p = p[n:]
			if end && len(p) == 0 {
				d.flags, d.acked = wire.FlagEOT, acked
			}
			staged[k] = d
			k++
			pushed = true
		}
		c.mu.Lock()
		c.wantPMTU(whole)
		for c.state == stateEstablished && !c.peerReleased && c.writeHeld() {
			if c.milk && c.msgStart > c.milkLive {
				// Milk: the send buffer overflows; the oldest message
				// goes, sent or not.
				c.abandon(c.messageEnd(c.milkLive) + 1)
				continue
			}
			c.trySend() // packets held back by more must not wait forever
			if !c.writeHeld() {
				continue // the packets it sent made room
			}
			c.pmtuWait = c.pmtuWait || !c.milk && c.pmtuHold()
			c.unsentWait = c.unsentWait || c.unsentHold()
			c.mu.Unlock()
			if err := c.wait(ctx, c.writable); err != nil {
				releaseStaged(staged[:k])
				return err
			}
			c.mu.Lock()
		}
		var err error
		switch {
		case c.state != stateEstablished:
			err = c.stateErr()
		case c.peerReleased:
			err = post.Errorf(post.ErrClosed, "fsp: peer released the connection")
		}
		if err != nil {
			c.mu.Unlock()
			releaseStaged(staged[:k])
			return err
		}
		for i := range k {
			eot := staged[i].flags&wire.FlagEOT != 0
			c.midMessage = !eot
			seq := c.snd.Push(staged[i], staged[i].n+overhead)
			c.sndBytes += staged[i].n + overhead
			staged[i] = txData{}
			if c.milk && eot {
				// A complete message supersedes the older ones.
				c.newest, c.msgStart = c.msgStart, seq+1
				c.supersede()
			}
		}
		if len(p) > 0 && ns == 0 {
			ns = c.takeSpare(spare[:])
		}
		if !more || len(p) > 0 {
			c.trySend()
		}
		c.mu.Unlock()
	}
	return nil
}

// packetShare is the payload of each packet of a write of n bytes when a
// packet takes at most limit: the write goes in as few packets as limit
// allows, of one size (rounded up to whole AES blocks, within limit) but
// for a shorter last one. So writes of one size give packets of one
// size, which the socket sends as GSO messages of equal segments (the
// kernel takes a run of them and one shorter last), where full packets
// and a short tail at each write's end would end a GSO message at every
// write. A 64 KiB write takes 8 packets of 8,192 bytes at the jumbo size
// and, as before, 46 full ones and a tail at 1,452 bytes.
func packetShare(n, limit int) int {
	if n <= limit {
		return n
	}
	k := (n + limit - 1) / limit // the fewest packets
	return min(((n+k-1)/k+15)&^15, limit)
}

// writeHeld reports whether a writer must wait before queueing more:
// the send buffer is full, the path MTU search holds it (pmtuHold), or
// enough waits to be sent (unsentHold). Called with c.mu held.
func (c *Conn) writeHeld() bool {
	return c.sndBytes >= c.sndLimit || !c.milk && c.pmtuHold() || c.unsentHold()
}

// AbortMessage abandons the outbound message in progress: its packets
// not yet sent are dropped, and an abort marker (a data packet without
// payload, flagged EOT and ABORT) ends the transaction, so the peer's
// reader gets an error wrapping post.ErrReset for the message and the
// next one follows. Packets already sent stay in reliability: the
// receiver needs every sequence number. Without a message in progress it
// does nothing. It never blocks (the context is not needed) and must not
// run concurrently with WriteMessage.
func (c *Conn) AbortMessage(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.midMessage {
		return nil
	}
	switch {
	case c.state != stateEstablished:
		return c.stateErr()
	case c.peerReleased:
		return post.Errorf(post.ErrClosed, "fsp: peer released the connection")
	}
	for {
		e := c.snd.Get(c.snd.Next() - 1)
		if e == nil || e.Sent || e.Value.flags&wire.FlagEOT != 0 || c.snd.PopUnsent() != e {
			break // sent, or an earlier message's
		}
		if e.Value.buf != nil {
			putBuf(e.Value.buf)
		}
		c.sndBytes -= e.Value.n + overhead
		e.Value = txData{}
	}
	// The marker is small and once per message: it does not wait for
	// room in the send buffer.
	seq := c.snd.Push(txData{op: wire.PureData, flags: wire.FlagEOT | wire.FlagAbort}, overhead)
	c.sndBytes += overhead
	c.midMessage = false
	c.stats.AbortsSent++
	if c.milk {
		// Not a message: it supersedes nothing, and is superseded by the
		// next complete one.
		c.msgStart = seq + 1
	}
	c.trySend()
	signal(c.writable)
	return nil
}

// messageEnd returns the sequence number of the last packet of the
// message containing seq, or the last one pushed.
func (c *Conn) messageEnd(seq uint64) uint64 {
	for ; seq+1 < c.snd.Next(); seq++ {
		if e := c.snd.Get(seq); e != nil && e.Value.flags&wire.FlagEOT != 0 {
			break
		}
	}
	return seq
}

// supersede abandons, on a milk connection, the superseded messages (older
// than the newest complete one) that lost a packet, with every message
// before them: lost superseded data is not retransmitted.
func (c *Conn) supersede() {
	if !c.milk || c.newest <= c.milkLive {
		return
	}
	if seq, ok := c.snd.LastLost(c.newest); ok {
		c.abandon(min(c.messageEnd(seq)+1, c.newest))
	}
}

// abandon gives up on the unacknowledged messages below seq on a milk
// connection: they are neither sent nor retransmitted again, and the skip
// point sent in every packet tells the receiver not to wait for them.
func (c *Conn) abandon(seq uint64) {
	if seq <= c.milkLive {
		return
	}
	c.snd.Abandon(seq, func(e *reliability.Entry[txData]) {
		if e.Value.buf != nil {
			c.freeTx(e.Value.buf)
			e.Value.buf = nil
		}
		c.sndBytes -= e.Value.n + overhead
		e.Value.acked = nil
		c.stats.Superseded++
	})
	c.milkLive = seq
	// Every packet carries the skip point; send one now, and keep asking
	// for acknowledgements until the peer's cumulative acknowledgement
	// passes it.
	c.ackNow = true
	if c.rtoAt.IsZero() {
		c.rtoAt = time.Now().Add(c.rto())
	}
	signal(c.writable)
}

func releaseSpare(bs []*[]byte) {
	for _, b := range bs {
		putBuf(b)
	}
}

func releaseStaged(ds []txData) {
	for _, d := range ds {
		if d.buf != nil {
			putBuf(d.buf)
		}
	}
}

// SendMessage writes p as one whole message.
func (c *Conn) SendMessage(ctx context.Context, p []byte) error {
	return c.WriteMessage(ctx, p, true)
}
