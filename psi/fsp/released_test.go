package fsp

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/psitest"
)

// TestReleasedDataOutlivesIdle: a peer that sent a message, closed (its
// Close returned nil: everything was acknowledged) and exited leaves the
// message readable however long the reader takes. The silent peer was
// declared dead after IdleTimeout, which freed the unread data, and the
// reader got io.EOF in its place (psitest ExitAfterClose under -race on
// a loaded host: 'message 0: EOF', and once 7,015,680 of 8,388,608
// bytes and io.EOF).
func TestReleasedDataOutlivesIdle(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.IdleTimeout, ccfg.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	l := listen(t, scfg)
	pc := psitest.NewVanishingConn(mustUDP(t))
	tr := &Transport{Conn: pc}
	t.Cleanup(func() { tr.Close() })
	ctx := testContext(t)
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	msg := randBytes(64 << 10)
	if err := c.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	pc.Vanish() // the sender's process exits
	time.Sleep(300 * time.Millisecond)
	sent := s.Stats().PacketsSent
	time.Sleep(1200 * time.Millisecond) // five idle timeouts in all, nothing read
	// Nor is the gone peer probed: keep-alives every 500 ms went on
	// until Close, after quiet probes 250 ms and 750 ms after its data.
	if n := s.Stats().PacketsSent - sent; n > 0 {
		t.Errorf("%d packets sent to the peer that released and left", n)
	}
	got, err := s.ReceiveMessage(ctx)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("after the sender exited: %d of %d bytes, %v", len(got), len(msg), err)
	}
	if _, _, err := s.ReadMessage(ctx, make([]byte, 8)); err != io.EOF {
		t.Fatalf("after the message: %v, want io.EOF", err)
	}
}
