package fsp

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Phases of the loss TestWindowUpdateRepeated imposes on each end.
const (
	winPass    = iota // the handshake: nothing lost
	winAskLost        // every packet that asks for an acknowledgement lost
	winAllLost        // everything lost
)

// TestWindowUpdateRepeated: a sender blocked by the receiver's window
// learns that the window opened although the update the read sent was
// lost, and every packet asking for an acknowledgement (the sender's
// window probes, the receiver's quiet probes) is lost too: the receiver
// repeats the update until data beyond the old window arrives. Before,
// nothing but those probes repeated it, and the transfer stalled for
// good (here until the context's 10 s safety limit).
func TestWindowUpdateRepeated(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.ReceiveWindow = 16 * MaxPayload // the least: 16 packets
	for _, cfg := range []*Config{scfg, ccfg} {
		cfg.IdleTimeout = time.Minute
		cfg.KeepAlive = -1 // no keep-alive carries the window
	}
	var sPhase, cPhase atomic.Int32
	lossy := func(phase *atomic.Int32) func(b []byte, send func([]byte)) {
		return func(b []byte, send func([]byte)) {
			var p wire.Packet
			if ph := phase.Load(); ph == winAllLost || ph == winAskLost && wire.Parse(b, &p) == nil && p.Flags&wire.FlagAckRequest != 0 {
				return
			}
			send(b)
		}
	}
	lt := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: lossy(&sPhase)}}
	ct := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: lossy(&cPhase)}}
	t.Cleanup(func() { ct.Close(); lt.Close() })
	l, err := lt.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, ct, l, ccfg)
	t.Cleanup(func() { c.Abort(nil); s.Abort(nil) })
	sPhase.Store(winAskLost)
	cPhase.Store(winAskLost)

	msg := bytes.Repeat([]byte("window update "), 64*MaxPayload/14)
	sent := make(chan error, 1)
	go func() { sent <- c.SendMessage(ctx, msg) }()

	// Wait until the sender filled the window, then lose everything the
	// receiver sends while it reads what the window held.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		full := s.window() == 0
		s.mu.Unlock()
		if full {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sender never filled the receiver's window")
		}
	}
	sPhase.Store(winAllLost)
	var got []byte
	buf := make([]byte, MaxPayload)
	for {
		n, _, err := s.ReadMessage(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		s.mu.Lock()
		drained := s.readLen() == 0
		s.mu.Unlock()
		if drained {
			break
		}
	}
	sPhase.Store(winAskLost)

	// 10 s is a safety limit: the first repeat comes after 50 ms here.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(got) < len(msg) {
		n, _, err := s.ReadMessage(rctx, buf)
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v (the window update was lost for good; %d repeats)", len(got), len(msg), err, s.Stats().WindowUpdates)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("message corrupted")
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("window update repeated %d times", s.Stats().WindowUpdates)
}
