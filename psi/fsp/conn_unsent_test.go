package fsp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
)

// TestUnsentHold: a bulk writer whose packets are in flight stops at
// maxUnsent packets waiting to be sent, far below its send buffer,
// instead of packetizing the whole buffer ahead of the sender. The peer
// is blackholed after the handshake, so nothing in flight is ever
// acknowledged and the writer stays held.
func TestUnsentHold(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.DisablePathMTUDiscovery = true // no pmtuHold: only this hold
	// The cleanups' Closes: the client is blackholed.
	scfg.Linger, ccfg.Linger = 100*time.Millisecond, 100*time.Millisecond
	cpc, err := netem.Listen("udp4", "127.0.0.1:0", netem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	spc, err := netem.Listen("udp4", "127.0.0.1:0", netem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, s, _ := pairOver(t, &Transport{Conn: spc}, &Transport{Conn: cpc}, scfg, ccfg)
	cpc.SetBlackhole(true)
	ctx, cancel := context.WithCancel(testContext(t))
	werr := make(chan error, 1)
	go func() { werr <- s.SendMessage(ctx, make([]byte, 16<<20)) }()
	var unsent, buffered int
	waitUntil(t, "the writer held with its send buffer not full", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		unsent, buffered = s.snd.Unsent(), s.sndBytes
		return s.unsentWait && s.sndBytes < s.sndLimit
	})
	t.Logf("held at %d packets unsent, %d bytes buffered of %d", unsent, buffered, s.cfg.sendBuffer())
	cancel()
	if err := <-werr; !errors.Is(err, context.Canceled) {
		t.Fatalf("held write after its context ended: %v", err)
	}
}

// TestUnsentHoldClosedWindow: with nothing in flight, because the
// peer's window is closed and everything sent is acknowledged, the
// writer fills its send buffer as before the unsent hold: a message
// larger than the window and maxUnsent packets together, but within the
// send buffer, is taken whole while the peer reads nothing.
func TestUnsentHoldClosedWindow(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.ReceiveWindow = 64 << 10 // 46 packets
	ccfg.SendBuffer = 2 << 20
	ccfg.Linger = 100 * time.Millisecond // the cleanup's Close: the peer reads nothing
	l := listen(t, scfg)
	c, _ := connect(t, l, ccfg)
	msg := make([]byte, 1<<20) // 745 packets
	if err := c.SendMessage(testContext(t), msg); err != nil {
		t.Fatalf("write within the send buffer, peer not reading: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snd.Unsent() < maxUnsent {
		t.Fatalf("%d packets unsent: the window took the message?", c.snd.Unsent())
	}
}
