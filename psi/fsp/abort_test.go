package fsp

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// waitFor polls cond, under the connection's lock, for up to 5 s.
func waitFor(t *testing.T, c *Conn, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestAbortMessage: an aborted message ends with an abort marker; the
// sender drops its unsent part, the receiver the part it holds unread,
// the reader gets ErrReset once for it, and the next message follows.
func TestAbortMessage(t *testing.T) {
	scfg, ccfg := pair(t)
	c, s := connect(t, listen(t, scfg), ccfg)
	ctx := testContext(t)
	if err := c.SendMessage(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	// Far more than the receiver's initial window: most stays queued.
	const big = 3 << 20
	if err := c.WriteMessage(ctx, randBytes(big), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "part of the message to arrive", func() bool { return s.readLen() > 2 })
	if err := c.AbortMessage(ctx); err != nil {
		t.Fatalf("AbortMessage: %v", err)
	}
	c.mu.Lock()
	queued := c.sndBytes
	c.mu.Unlock()
	if queued >= big/2 {
		t.Errorf("after the abort %d bytes stay queued: the unsent part was kept", queued)
	}
	// The receiver holds "before" and the marker, nothing of the message.
	waitFor(t, s, "the abort marker", func() bool { return s.readLen() > 0 && s.readQ[len(s.readQ)-1].abort })
	s.mu.Lock()
	held := s.readLen()
	s.mu.Unlock()
	if held != 2 {
		t.Errorf("receiver holds %d packets after the abort, want 2", held)
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "before" {
		t.Fatalf("message before the aborted one: %q, %v", m, err)
	}
	if m, err := s.ReceiveMessage(ctx); !errors.Is(err, post.ErrReset) || m != nil {
		t.Fatalf("aborted message: %d bytes, %v; want nil and ErrReset", len(m), err)
	}
	// Nothing in progress: nothing to abort, nothing sent.
	c.mu.Lock()
	next := c.snd.Next()
	c.mu.Unlock()
	if err := c.AbortMessage(ctx); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	if c.snd.Next() != next {
		t.Error("AbortMessage without a message in progress sent a marker")
	}
	c.mu.Unlock()
	want := randBytes(200 << 10)
	if err := c.SendMessage(ctx, want); err != nil {
		t.Fatal(err)
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || !bytes.Equal(m, want) {
		t.Fatalf("message after the aborted one: %d bytes, %v", len(m), err)
	}
	if sent, got := c.Stats().AbortsSent, s.Stats().AbortsReceived; sent != 1 || got != 1 {
		t.Errorf("AbortsSent %d, AbortsReceived %d; want 1 and 1", sent, got)
	}
}

// TestAbortMessagePartRead: parts read stay read; the unread rest of the
// message is dropped and the reader gets ErrReset where it would have
// gone on.
func TestAbortMessagePartRead(t *testing.T) {
	scfg, ccfg := pair(t)
	c, s := connect(t, listen(t, scfg), ccfg)
	ctx := testContext(t)
	if err := c.WriteMessage(ctx, []byte("0123456789"), false); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if n, end, err := s.ReadMessage(ctx, buf); n != 4 || end || err != nil {
		t.Fatalf("first part: %d, %v, %v", n, end, err)
	}
	if err := c.AbortMessage(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "the abort marker", func() bool { return s.readLen() > 0 && s.readQ[len(s.readQ)-1].abort })
	if n, end, err := s.ReadMessage(ctx, buf); n != 0 || end || !errors.Is(err, post.ErrReset) {
		t.Fatalf("read after the abort: %d, %v, %v; want ErrReset", n, end, err)
	}
	if err := c.SendMessage(ctx, []byte("next")); err != nil {
		t.Fatal(err)
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "next" {
		t.Fatalf("next message: %q, %v", m, err)
	}
}

// TestAbortMessageMilk: on a milk clone an aborted message is dropped
// like a superseded one; the reader never sees it, only the next one.
func TestAbortMessageMilk(t *testing.T) {
	scfg, ccfg := pair(t)
	c, s := connect(t, listen(t, scfg), ccfg)
	ctx := testContext(t)
	f, err := c.ForkClass(ctx, psi.Milk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.SendMessage(ctx, []byte("first")); err != nil {
		t.Fatal(err)
	}
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := sf.ReceiveMessage(ctx); err != nil || string(m) != "first" {
		t.Fatalf("first: %q, %v", m, err)
	}
	if err := f.WriteMessage(ctx, randBytes(5000), false); err != nil {
		t.Fatal(err)
	}
	if err := f.AbortMessage(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.SendMessage(ctx, []byte("next")); err != nil {
		t.Fatal(err)
	}
	if m, err := sf.ReceiveMessage(ctx); err != nil || string(m) != "next" {
		t.Fatalf("after the aborted message: %q, %v", m, err)
	}
}

// TestAbortMessageLossy aborts messages in progress on a lossy link
// while the reader reads them: each ends, for the reader, with parts and
// ErrReset, never complete, and the message after it arrives whole.
func TestAbortMessageLossy(t *testing.T) {
	c, s := lossyPairConfig(t, netem.Config{Loss: 0.05, Reorder: 0.02, Duplicate: 0.01, Seed: 7}, nil)
	ctx := testContext(t)
	const rounds = 4
	errc := make(chan error, 1)
	go func() {
		for i := range rounds {
			if err := c.WriteMessage(ctx, randBytes(300<<10), false); err != nil {
				errc <- err
				return
			}
			if err := c.AbortMessage(ctx); err != nil {
				errc <- err
				return
			}
			if err := c.SendMessage(ctx, []byte{byte(i)}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf := make([]byte, 16<<10)
	for i := range rounds {
		for {
			n, end, err := s.ReadMessage(ctx, buf)
			if errors.Is(err, post.ErrReset) {
				break
			}
			if err != nil || end {
				t.Fatalf("round %d: aborted message: %d, end %v, %v", i, n, end, err)
			}
		}
		if m, err := s.ReceiveMessage(ctx); err != nil || len(m) != 1 || m[0] != byte(i) {
			t.Fatalf("round %d: message after the aborted one: %v, %v", i, m, err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
