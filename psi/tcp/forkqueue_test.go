package tcp

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// waitForkWait waits until n forks of root wait for room in its
// AcceptFork queue.
func waitForkWait(t *testing.T, root psi.Transient, n int32) {
	t.Helper()
	tr := root.(*transient)
	for deadline := time.Now().Add(time.Minute); tr.forkWait.Load() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d forks waiting, want %d", tr.forkWait.Load(), n)
		}
	}
}

// Past MaxUnacceptedForks as many forks again wait for AcceptFork to make
// room, and complete once it does; further forks fail at once with
// post.ErrBackpressure. The handshake timeout here is only a hang bound:
// the test waits for the server to hold both forks back, not for time.
func TestForkHeldBack(t *testing.T) {
	l := testListener(t, Stack{MaxUnacceptedForks: 2, ServerHandshakeTimeout: time.Minute})
	ctx := context.Background()
	c, root := rootFrom(t, l, "127.0.0.1")
	for i := range 2 {
		f, err := c.Fork(ctx, psi.Wine)
		if err != nil {
			t.Fatalf("fork %d: %v", i, err)
		}
		defer f.Close()
	}
	held := make(chan error, 2)
	for i := range 2 {
		go func() {
			f, err := c.Fork(ctx, psi.Wine)
			if err == nil {
				t.Cleanup(func() { f.Close() })
				err = f.WriteMessage(ctx, fmt.Appendf(nil, "held %d", i), true, nil)
			}
			held <- err
		}()
	}
	waitForkWait(t, root, 2)
	// Refused at once: were it held back too, it would wait 45 s, past
	// this bound.
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.Fork(octx, psi.Wine); !errors.Is(err, post.ErrBackpressure) {
		t.Fatalf("fork past the held-back ones: %v, want ErrBackpressure", err)
	}
	select {
	case err := <-held:
		t.Fatalf("held-back fork returned before AcceptFork made room: %v", err)
	default:
	}
	got := map[string]bool{}
	for i := range 4 {
		f, err := root.AcceptFork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if i < 2 {
			continue
		}
		buf := make([]byte, 64)
		n, end, err := f.ReadMessage(ctx, buf)
		if err != nil || !end {
			t.Fatalf("held-back fork's message: %q %v %v", buf[:n], end, err)
		}
		got[string(buf[:n])] = true
	}
	for range 2 {
		if err := <-held; err != nil {
			t.Fatalf("held-back fork: %v", err)
		}
	}
	if !got["held 0"] || !got["held 1"] {
		t.Fatalf("held-back forks' messages: %v", got)
	}
}

// A fork held back fails loudly with post.ErrBackpressure once the
// server's handshake timeout nears with no room made; the fork queued
// before it is not dropped. The timeout also bounds every fork's TLS
// handshake and hello, hence 2 s, not less: a loaded host under -race took
// over 400 ms for them.
func TestForkHeldBackTimesOut(t *testing.T) {
	l := testListener(t, Stack{MaxUnacceptedForks: 1, ServerHandshakeTimeout: 2 * time.Second})
	ctx := context.Background()
	c, root := rootFrom(t, l, "127.0.0.1")
	f1, err := c.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	held := make(chan error, 1)
	go func() {
		_, err := c.Fork(ctx, psi.Wine)
		held <- err
	}()
	waitForkWait(t, root, 1) // it waits, not refused at once
	if err := <-held; !errors.Is(err, post.ErrBackpressure) {
		t.Fatalf("held-back fork: %v, want ErrBackpressure", err)
	}
	if err := f1.WriteMessage(ctx, []byte("first"), true, nil); err != nil {
		t.Fatal(err)
	}
	sf1, err := root.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf1.Close()
	buf := make([]byte, 64)
	if n, end, err := sf1.ReadMessage(ctx, buf); err != nil || !end || string(buf[:n]) != "first" {
		t.Fatalf("queued fork's message: %q %v %v", buf[:n], end, err)
	}
}
