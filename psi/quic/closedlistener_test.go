package quic

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

// TestClosedListenerRefuses: once a listener is closed, while a
// connection it accepted keeps the socket open, a new dial is refused
// (post.ErrRefused), as on FSP and TCP, and the accepted connection is
// still served. Before, quic-go, left without a server, dropped the new
// Initials and the dial waited for its timeout.
func TestClosedListenerRefuses(t *testing.T) {
	c, s, l := pair(t, &Stack{}, serverConfig(), clientConfig())
	ctx := testContext(t)
	l.Close()

	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	defer dcancel()
	if c2, err := (&Stack{}).Dial(dctx, l.Addr(), clientConfig()); err == nil {
		c2.Close()
		t.Fatal("a dial to a closed listener connected")
	} else if !errors.Is(err, post.ErrRefused) {
		t.Fatalf("a dial to a closed listener: %v, want post.ErrRefused", err)
	}
	if err := c.WriteMessage(ctx, []byte("still served"), true, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _, err := s.ReadMessage(ctx, buf)
	if err != nil || string(buf[:n]) != "still served" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}
