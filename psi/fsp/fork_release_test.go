package fsp

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

// TestForkWaitingEndsOnPeerRelease: Forks waiting for fork credit fail
// once the peer releases the connection in order, all of them, instead
// of waiting until their context ends (the peer's RELEASE woke only a
// blocked writer, so a Fork without a deadline waited forever). Nothing
// reads the connection, as a Carrier reads nothing until asked.
func TestForkWaitingEndsOnPeerRelease(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	// The server never accepts forks, so the client has the credit it
	// may use before hearing any: four clones.
	for range 4 {
		f, err := c.Fork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	const waiting = 3
	errs := make(chan error, waiting)
	var wg sync.WaitGroup
	for range waiting {
		wg.Go(func() {
			f, err := c.Fork(ctx)
			if err == nil {
				f.Close()
			}
			errs <- err
		})
	}
	time.Sleep(100 * time.Millisecond) // let them wait for credit
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Forks still wait for credit 10 s after the peer released the connection")
	}
	close(errs)
	for err := range errs {
		if err == nil || errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, post.ErrClosed) {
			t.Errorf("Fork after the peer released: %v; want an error wrapping post.ErrClosed", err)
		}
	}
}
