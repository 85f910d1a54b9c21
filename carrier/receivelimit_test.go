package carrier_test

import (
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

// TestReceiveOverLimitArrived: a message over the receiver's
// MaxMessageSize that has fully arrived before Receive is called still
// fails Receive with ErrMessageTooLarge on every stack, and stays pending
// for Ready to take in parts.
func TestReceiveOverLimitArrived(t *testing.T) {
	for _, stack := range []string{"fsp", "quic", "tcp"} {
		t.Run(stack, func(t *testing.T) {
			scfg := serverConfig()
			scfg.MaxMessageSize = 100_000
			c, s := confPair(t, stack, nil, scfg)
			ctx := ctxT(t)
			w, err := c.NewMessageWriter(ctx, post.Properties{})
			if err != nil {
				t.Fatal(err)
			}
			for range 7 {
				if _, err := w.Write(make([]byte, 15_000)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := w.WriteLast(make([]byte, 15_000)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // all of it arrives first
			m, err := s.Receive(ctx)
			if !errors.Is(err, post.ErrMessageTooLarge) {
				t.Fatalf("Receive of a 120,000-byte message with a 100,000-byte limit: %d bytes, %v", contentLen(m), err)
			}
			if got := readParts(t, ctx, s, 10_000); len(got) != 120_000 {
				t.Fatalf("parts: %d bytes", len(got))
			}
		})
	}
}

func contentLen(m *post.Message) int {
	if m == nil {
		return -1
	}
	return len(m.Content)
}
