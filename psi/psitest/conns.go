package psitest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// ConnsPerSource checks a listener l that lets one source hold at most n
// (2 or more) live connections: dial(ctx, from) dials a root transient to
// l from the IPv4 loopback address from, count(from) is what l counts for
// from's source. n dials from one address get in, the next is refused at
// once with an error wrapping post.ErrRefused, a client
// at another address still gets in, a connection its client closes or
// aborts makes room for one more, and once every client has closed the
// counts are back to zero (the refused dial held nothing). The listener's
// application accepts every transient, reads it until it ends and then
// closes it. Every stack runs it (FSP, QUIC, TCP), so a source is bounded
// alike on whichever stack wins a race.
func ConnsPerSource(t *testing.T, l psi.Listener, n int, dial func(ctx context.Context, from string) (psi.Transient, error), count func(from string) int) {
	t.Helper()
	ctx := testContext(t, time.Minute)
	go func() {
		for {
			tr, err := l.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 512)
				for {
					if _, _, err := tr.ReadMessage(ctx, buf); err != nil {
						break
					}
				}
				tr.Close()
			}()
		}
	}()
	// Bounds safety, not speed: a loaded host under the race detector may
	// take a while to see a close.
	waitCount := func(from string, want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			got := count(from)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the listener counts %d connections from %s, want %d", got, from, want)
			}
		}
	}
	const src, other = "127.0.0.2", "127.0.0.3"
	mustDial := func(from, what string) psi.Transient {
		t.Helper()
		tr, err := dial(ctx, from)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return tr
	}
	var held []psi.Transient
	defer func() {
		for _, tr := range held {
			psi.Abort(tr, nil)
		}
	}()
	for i := range n {
		held = append(held, mustDial(src, fmt.Sprintf("connection %d of %d", i+1, n)))
	}
	waitCount(src, n)
	over := func(what string) {
		t.Helper()
		start := time.Now()
		tr, err := dial(ctx, src)
		if err == nil {
			tr.Close()
			t.Fatalf("%s: a connection past the bound of %d got in", what, n)
		}
		if !errors.Is(err, post.ErrRefused) {
			t.Fatalf("%s: %v, want an error wrapping post.ErrRefused", what, err)
		}
		t.Logf("%s: refused after %v: %v", what, time.Since(start).Round(time.Millisecond), err)
	}
	over("past the bound")
	if got := count(src); got != n {
		t.Fatalf("%d connections counted from %s after a refusal, want %d", got, src, n)
	}
	tr := mustDial(other, "a client at another address")
	waitCount(other, 1)
	if err := tr.Close(); err != nil {
		t.Logf("closing the other client: %v", err)
	}
	waitCount(other, 0)

	// A connection its client closes makes room, and one it aborts.
	if err := held[0].Close(); err != nil {
		t.Logf("closing a client: %v", err)
	}
	waitCount(src, n-1)
	held[0] = mustDial(src, "after a close")
	waitCount(src, n)
	over("past the bound again")
	psi.Abort(held[1], nil)
	waitCount(src, n-1)
	held[1] = mustDial(src, "after an abort")
	waitCount(src, n)

	for _, tr := range held {
		tr.Close()
	}
	held = nil
	waitCount(src, 0)
}
