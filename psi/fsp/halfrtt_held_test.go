package fsp

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// lateAnswer is a listener socket that, once armed, holds back its first
// answer to RESTORE, so that the 0.5-RTT data written meanwhile overtakes
// it, and then, once cut, sends nothing but that answer.
type lateAnswer struct {
	net.PacketConn
	mu     sync.Mutex
	armed  bool
	cut    bool
	answer []byte
	to     net.Addr
	data   int // data packets sent
}

func (a *lateAnswer) WriteTo(b []byte, addr net.Addr) (int, error) {
	var p wire.Packet
	parsed := wire.Parse(b, &p) == nil
	a.mu.Lock()
	switch {
	case a.armed && parsed && p.Opcode == wire.AckConnectReq:
		// The first is held; repeats (the client's handshake timer fired
		// on a slow host) are lost.
		if a.answer == nil {
			a.answer, a.to = bytes.Clone(b), addr
		}
		a.mu.Unlock()
		return len(b), nil
	case a.cut:
		a.mu.Unlock()
		return len(b), nil
	case parsed && p.Opcode == wire.PureData:
		a.data++
	}
	a.mu.Unlock()
	return a.PacketConn.WriteTo(b, addr)
}

// release cuts the socket off and sends the answer it held.
func (a *lateAnswer) release() {
	a.mu.Lock()
	a.cut, a.armed = true, false
	b, to := a.answer, a.to
	a.mu.Unlock()
	if b != nil {
		a.PacketConn.WriteTo(b, to)
	}
}

// TestHalfRTTDataBeforeAnswer: 0.5-RTT data and the ticket that overtake
// the listener's answer are kept by the client, up to maxHeld datagrams
// (forged ones past that are dropped), and read once the answer comes:
// with the listener cut off after its answer, nothing is sent again, yet
// the message and the ticket arrive. The client dropped them, and the
// message waited for a retransmission that never came.
func TestHalfRTTDataBeforeAnswer(t *testing.T) {
	lh := &lateAnswer{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	lh.mu.Lock()
	lh.armed = true
	lh.mu.Unlock()
	h := &recConn{PacketConn: mustUDP(t)}
	c, acc := halfDial(t, l, ccfg, h)
	ctx := testContext(t)
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	msg := bytes.Repeat([]byte("half"), 500) // two packets
	if err := s.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// Forged datagrams to the client's connection, which it cannot tell
	// from the listener's before the answer.
	forger := mustUDP(t)
	forged := wire.AppendHeader(nil, &wire.Packet{Header: wire.Header{Opcode: wire.PureData, Dst: c.LocalALFID(), Src: s.LocalALFID()}})
	forged = append(forged, make([]byte, 200)...)
	const nForged = 10
	// A safety limit for the waits below, not a speed check.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	for {
		lh.mu.Lock()
		sent := lh.data
		lh.mu.Unlock()
		c.mu.Lock()
		held := 0
		if c.resume != nil {
			held = len(c.resume.held)
		}
		c.mu.Unlock()
		if sent >= 2 && held >= 3 { // the ticket and the two data packets
			break
		}
		select {
		case <-wctx.Done():
			t.Fatalf("%d data packets sent, %d datagrams held", sent, held)
		case <-time.After(time.Millisecond):
		}
	}
	for range nForged {
		forger.WriteTo(forged, h.LocalAddr())
	}
	for {
		c.mu.Lock()
		held, dropped := len(c.resume.held), c.stats.PacketsDropped
		c.mu.Unlock()
		if held > maxHeld {
			t.Fatalf("%d datagrams held, bound %d", held, maxHeld)
		}
		if dropped >= nForged-(maxHeld-3) {
			break
		}
		select {
		case <-wctx.Done():
			t.Fatalf("%d held, %d dropped", held, dropped)
		case <-time.After(time.Millisecond):
		}
	}
	lh.release()
	// A safety limit: without the held data the message never comes.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if got, err := c.ReceiveMessage(rctx); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	waitTicket(t, ccfg.Security.SessionCache, c)
	lh.mu.Lock()
	lh.cut = false
	lh.mu.Unlock()
	pingPong(t, c, s)
	if st := c.Stats(); st.PacketsDropped < nForged-(maxHeld-3)+1 {
		t.Errorf("%d packets dropped; the forged ones should be", st.PacketsDropped)
	}
}
