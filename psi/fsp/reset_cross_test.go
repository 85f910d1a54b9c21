package fsp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/post"
)

// TestResetCrossingRelease: the peer's RESET that crosses our RELEASE
// ends our Close with post.ErrReset. A protected RESET without a reason
// is as long as an unauthenticated one; Close took it for one, failed its
// tag and dropped it, and waited out the linger (post.ErrTimeout). Found
// by a program written from the docs: an accepted Carrier's Close right
// after its peer's Abort.
func TestResetCrossingRelease(t *testing.T) {
	c, s, r := relayPair(t)
	ctx := testContext(t)
	if err := c.SendMessage(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "before" {
		t.Fatal(string(m), err)
	}
	// Hold the server's packets, so its RELEASE reaches the client only
	// after the client's RESET left.
	r.SetConfig(netem.Config{}, netem.Config{Delay: 300 * time.Millisecond})
	sent := s.Stats().PacketsSent
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.CloseContext(cctx) }()
	for s.Stats().PacketsSent == sent { // the RELEASE left
		time.Sleep(time.Millisecond)
	}
	c.Abort(errors.New("gave up"))
	if err := <-errc; !errors.Is(err, post.ErrReset) || errors.Is(err, post.ErrTimeout) {
		t.Fatalf("Close crossing the peer's RESET: %v, want an error wrapping ErrReset", err)
	}
}
