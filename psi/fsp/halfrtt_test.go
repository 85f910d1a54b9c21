package fsp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// resumableOn is resumable with 0-RTT, the listener on pc: its
// datagrams can be recorded or dropped. tune, if not nil, changes the
// listener's configuration.
func resumableOn(t *testing.T, pc net.PacketConn, tune func(*Config)) (*Listener, *Config) {
	t.Helper()
	scfg, ccfg := pair(t)
	scfg.Allow0RTT, ccfg.Allow0RTT = true, true
	if tune != nil {
		tune(scfg)
	}
	cache := tls.NewLRUClientSessionCache(4)
	ccfg.Security.SessionCache = cache
	tr := &Transport{Conn: pc}
	t.Cleanup(func() { tr.Close() })
	l, err := tr.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, s := connect(t, l, ccfg)
	pingPong(t, c, s)
	waitTicket(t, cache, c)
	c.Close()
	return l, ccfg
}

// onlyRestores drops every datagram but RESTORE.
func onlyRestores(b []byte) bool {
	var p wire.Packet
	return wire.Parse(b, &p) != nil || p.Opcode != wire.Restore
}

// halfDial dials l from a transport on h (a fresh recorded socket) and
// accepts the connection, which the caller gets once Accept returned.
func halfDial(t *testing.T, l *Listener, ccfg *Config, h *recConn) (*Conn, <-chan *Conn) {
	t.Helper()
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	ctx := testContext(t)
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	acc := make(chan *Conn, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			close(acc)
			return
		}
		t.Cleanup(func() { s.Close() })
		acc <- s
	}()
	return c, acc
}

// confirmed reports whether the listener's connection s had the
// initiator's confirmation.
func confirmed(s *Conn) bool {
	select {
	case <-s.HandshakeComplete():
		return true
	default:
		return false
	}
}

// TestHalfRTTReaderFirst: a reader-first 0-RTT dial whose client loses
// everything it sends after RESTORE, its confirmation included, still
// gets the listener's first message: the listener accepted the
// connection on RESTORE and sent its data before any confirmation, one
// round trip after Dial. Before 0.5-RTT data the listener handed the
// connection to Accept only on the confirmation, and this message never
// came. Then the client's packets pass again, and the connection
// confirms and carries data both ways.
func TestHalfRTTReaderFirst(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	h := &recConn{PacketConn: mustUDP(t), drop: onlyRestores}
	c, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	// A safety limit, not a speed check: without 0.5-RTT data neither
	// the connection nor the message comes while the confirmation is
	// lost.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var s *Conn
	select {
	case s = <-acc:
	case <-rctx.Done():
		t.Fatal("Accept waited for the client's confirmation")
	}
	if s == nil {
		t.Fatal("Accept failed")
	}
	go s.SendMessage(ctx, []byte("server speaks first"))
	if m, err := c.ReceiveMessage(rctx); err != nil || string(m) != "server speaks first" {
		t.Fatalf("got %q, %v", m, err)
	}
	var restores, lost int
	for _, p := range h.packetsFrom(c.LocalALFID()) {
		if p.Opcode == wire.Restore {
			restores++
		} else {
			lost++
		}
	}
	var data int
	lh.mu.Lock()
	for _, b := range lh.sent {
		var p wire.Packet
		if wire.Parse(b, &p) == nil && p.Dst == c.LocalALFID() && p.Opcode == wire.PureData {
			data++
			if p.Flags&flagHalfRTT == 0 {
				t.Error("0.5-RTT data without flagHalfRTT")
			}
		}
	}
	lh.mu.Unlock()
	if restores == 0 || data == 0 {
		t.Fatalf("%d RESTOREs reached the listener, which sent %d data packets", restores, data)
	}
	t.Logf("the listener's message came with %d RESTORE(s) and none of the client's %d other packets", restores, lost)
	if confirmed(s) {
		t.Fatal("the listener confirmed with every client packet but RESTORE lost")
	}
	h.mu.Lock()
	h.drop = nil
	h.mu.Unlock()
	pingPong(t, c, s)
	if !confirmed(s) || !s.Used0RTT() || !c.Resumed() {
		t.Fatalf("confirmed %v, listener 0-RTT %v, resumed %v", confirmed(s), s.Used0RTT(), c.Resumed())
	}
	noMore(t, ctx, c, 100*time.Millisecond)
}

// TestHalfRTTAmplification: what the listener sends before the client's
// confirmation, answers included, stays within three times the bytes of
// the RESTOREs it got from the client's address, however much the
// application writes; the rest waits for the confirmation and then
// arrives whole.
func TestHalfRTTAmplification(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	lh.mu.Lock()
	lh.sent = nil
	lh.mu.Unlock()
	h := &recConn{PacketConn: mustUDP(t), drop: onlyRestores}
	c, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	msg := bytes.Repeat([]byte("0.5-RTT "), 4096) // 32 KiB
	werr := make(chan error, 1)
	go func() { werr <- s.SendMessage(ctx, msg) }()
	// Until the bound stops the listener's sends; no packet waits for a
	// clock.
	for {
		s.mu.Lock()
		stopped := s.earlyResp != nil && s.earlyResp.blocked && !s.sending
		half := s.earlyResp != nil
		s.mu.Unlock()
		if stopped {
			break
		}
		if !half {
			t.Fatal("the listener confirmed with every client packet but RESTORE lost")
		}
		time.Sleep(time.Millisecond)
	}
	var in, out, data int
	for _, p := range h.packetsFrom(c.LocalALFID()) {
		if p.Opcode == wire.Restore {
			in += len(p.HeaderBytes) + len(p.Payload)
		}
	}
	lh.mu.Lock()
	for _, b := range lh.sent {
		var p wire.Packet
		if wire.Parse(b, &p) == nil && p.Dst == c.LocalALFID() {
			out += len(b)
			if p.Opcode == wire.PureData {
				data++
			}
		}
	}
	lh.mu.Unlock()
	if out > 3*in || data == 0 {
		t.Fatalf("the listener sent %d bytes (%d data packets) for %d bytes of RESTORE", out, data, in)
	}
	t.Logf("before the confirmation: %d bytes of RESTORE in, %d bytes out (%d data packets)", in, out, data)
	h.mu.Lock()
	h.drop = nil
	h.mu.Unlock()
	got, err := c.ReceiveMessage(ctx)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !confirmed(s) {
		t.Fatal("not confirmed")
	}
	pingPong(t, c, s)
}

// TestHalfRTTLoss: the listener's answer to RESTORE and its first 0.5-RTT
// data packets are lost; the client repeats RESTORE, and the message
// arrives once, whole, in order with the next.
func TestHalfRTTLoss(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	// Lose the listener's first answer and first two data packets from
	// now on: the next connection's.
	sent := dropFirstSent(lh, map[wire.Opcode]int{wire.AckConnectReq: 1, wire.PureData: 2})
	h := &recConn{PacketConn: mustUDP(t)}
	c, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	for _, m := range []string{"first", "second"} {
		if err := s.SendMessage(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"first", "second"} {
		if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != want {
			t.Fatalf("got %q, %v; want %q", m, err, want)
		}
	}
	noMore(t, ctx, c, 100*time.Millisecond)
	lh.mu.Lock()
	lost := min(sent[wire.AckConnectReq], 1) + min(sent[wire.PureData], 2)
	lh.mu.Unlock()
	pingPong(t, c, s)
	t.Logf("%d of the listener's packets lost; RESTOREs sent: %d", lost, len(restores(t, h.packetsFrom(c.LocalALFID()))))
}

// sentTo sums the datagrams h sent to ALFID dst, and counts its data
// packets among them.
func sentTo(h *recConn, dst uint32) (bytes, data int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.sent {
		var p wire.Packet
		if wire.Parse(b, &p) == nil && p.Dst == dst {
			bytes += len(b)
			if p.Opcode == wire.PureData {
				data++
			}
		}
	}
	return bytes, data
}

// TestHalfRTTCloseUnconfirmed: a listener's connection closed before the
// client's confirmation, which never comes, sends its message and its
// RELEASE within the bound; Close gives up at its deadline, and the
// client gets the message and then the end, whichever way it came.
func TestHalfRTTCloseUnconfirmed(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	h := &recConn{PacketConn: mustUDP(t), drop: onlyRestores}
	c, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	if err := s.SendMessage(ctx, []byte("last words")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "last words" {
		t.Fatalf("got %q, %v", m, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := s.CloseContext(cctx); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("Close without the client's acknowledgement: %v", err)
	}
	if m, err := c.ReceiveMessage(ctx); err == nil {
		t.Fatalf("a message after the last: %q", m)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, post.ErrReset) {
		t.Fatalf("the end: %v", err)
	}
	var in int
	for _, req := range h.packetsFrom(c.LocalALFID()) {
		if req.Opcode == wire.Restore {
			in += len(req.HeaderBytes) + len(req.Payload)
		}
	}
	if out, _ := sentTo(lh, c.LocalALFID()); out > 3*in {
		t.Fatalf("%d bytes sent for %d of RESTORE", out, in)
	}
}

// TestHalfRTTNeverConfirmed: a connection handed to Accept on RESTORE
// whose client never confirms ends at the handshake timeout, as a
// pending handshake does.
func TestHalfRTTNeverConfirmed(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, func(c *Config) { c.HandshakeTimeout = 2 * time.Second })
	ccfg.Linger = 100 * time.Millisecond // the cleanup's Close: nothing gets through
	h := &recConn{PacketConn: mustUDP(t), drop: onlyRestores}
	_, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("an unconfirmed connection outlived its handshake timeout")
	}
	if err := s.Err(); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("ended with %v", err)
	}
	if _, err := s.ReceiveMessage(ctx); err == nil {
		t.Fatal("read on a dead connection")
	}
}

// TestHalfRTTForkWaits: the listener's side cannot fork a connection
// handed out on RESTORE before the client confirms (a clone would send
// beyond the amplification bound); once it has, the clone goes through.
func TestHalfRTTForkWaits(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	h := &recConn{PacketConn: mustUDP(t), drop: onlyRestores}
	c, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if f, err := s.Fork(fctx); err == nil {
		f.Close()
		t.Fatal("forked before the client confirmed")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fork: %v", err)
	}
	h.mu.Lock()
	h.drop = nil
	h.mu.Unlock()
	pingPong(t, c, s)
	f, err := s.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.SendMessage(ctx, []byte("from the listener's clone")); err != nil {
		t.Fatal(err)
	}
	cf, err := c.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	if m, err := cf.ReceiveMessage(ctx); err != nil || string(m) != "from the listener's clone" {
		t.Fatalf("got %q, %v", m, err)
	}
}

// TestHalfRTTTicketLost: the listener's answer to RESTORE and the ticket
// that followed it are lost; a reader-first client repeats RESTORE when
// its handshake timer fires, and still gets a ticket for its next dial.
// The ticket left once, with the first answer, and the client ended
// without one.
func TestHalfRTTTicketLost(t *testing.T) {
	_, _, lh, sent, c, s := serverFirstLosing(t, map[wire.Opcode]int{wire.AckConnectReq: 1, wire.Ticket: 1})
	lh.mu.Lock()
	if answers, tickets := sent[wire.AckConnectReq], sent[wire.Ticket]; answers < 2 || tickets < 2 {
		t.Errorf("%d answers and %d tickets sent: the loss did not happen as planned", answers, tickets)
	}
	lh.mu.Unlock()
	pingPong(t, c, s)
}

// serverFirstLosing resumes with 0-RTT on a listener that loses the
// first drop[op] datagrams it sends of each opcode op; the listener's end
// writes first, and the client reads that and waits for its next ticket.
// It returns the listener, the client's configuration, the listener's
// socket and its counts (dropFirstSent), and both ends.
func serverFirstLosing(t *testing.T, drop map[wire.Opcode]int) (*Listener, *Config, *recConn, map[wire.Opcode]int, *Conn, *Conn) {
	t.Helper()
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	sent := dropFirstSent(lh, drop)
	c, acc := halfDial(t, l, ccfg, &recConn{PacketConn: mustUDP(t)})
	ctx := testContext(t)
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	if err := s.SendMessage(ctx, []byte("server first")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "server first" {
		t.Fatalf("got %q, %v", m, err)
	}
	waitTicket(t, ccfg.Security.SessionCache, c)
	return l, ccfg, lh, sent, c, s
}

// TestHalfRTTTicketLostWriterFirst: the listener's answer to RESTORE and
// the ticket that followed it are lost; the client writes its first
// message before any answer came, so the listener gets it in a copy of
// RESTORE, not a repeat (the client's plain repeats are lost), answers
// that, and the client confirms. It still gets a ticket for its next
// dial: only a repeat got a new one, and the client ended without.
func TestHalfRTTTicketLostWriterFirst(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	sent := dropFirstSent(lh, map[wire.Opcode]int{wire.AckConnectReq: 1, wire.Ticket: 1})
	plain := 0
	h := &recConn{PacketConn: mustUDP(t), drop: func(b []byte) bool {
		var p wire.Packet
		if wire.Parse(b, &p) != nil || p.Opcode != wire.Restore {
			return false
		}
		req, err := parseRestore(&p)
		if err != nil || req.early != nil {
			return false
		}
		plain++
		return plain > 1
	}}
	c, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	if err := c.SendMessage(ctx, []byte("client first")); err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "client first" {
		t.Fatalf("got %q, %v", m, err)
	}
	waitTicket(t, ccfg.Security.SessionCache, c)
	if !s.tookEarly() {
		t.Error("the message did not come in a copy of RESTORE")
	}
	lh.mu.Lock()
	if answers, tickets := sent[wire.AckConnectReq], sent[wire.Ticket]; answers < 2 || tickets < 2 {
		t.Errorf("%d answers and %d tickets sent: the loss did not happen as planned", answers, tickets)
	}
	lh.mu.Unlock()
	pingPong(t, c, s)
}

// dropFirstSent has h drop, from now on, the first n[op] datagrams it sends
// of each opcode op in n. It returns how many of each it was asked to
// send, to be read with h.mu held.
func dropFirstSent(h *recConn, n map[wire.Opcode]int) map[wire.Opcode]int {
	sent := make(map[wire.Opcode]int)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drop = func(b []byte) bool {
		var p wire.Packet
		if wire.Parse(b, &p) != nil {
			return false
		}
		limit, ok := n[p.Opcode]
		if !ok {
			return false
		}
		sent[p.Opcode]++
		return sent[p.Opcode] <= limit
	}
	return sent
}
