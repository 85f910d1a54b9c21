package carrier_test

import (
	"errors"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/post"
)

// TestNewDormantNoRemote: a dormant Carrier with no Remote queues a Send
// and fails the message with post.ErrUnknownHost: to its OnEvent, and
// from Flush and Close, as NewDormant's doc says.
func TestNewDormantNoRemote(t *testing.T) {
	ctx := ctxT(t)
	c := carrier.NewDormant(nil, &carrier.Config{})
	events := make(chan post.SendEvent, 1)
	if err := c.SendMsg(ctx, &post.Message{Content: []byte("x"), OnEvent: func(e post.SendEvent) {
		if e.Kind != post.EventSent {
			events <- e
		}
	}}); err != nil {
		t.Fatalf("SendMsg: %v", err)
	}
	if e := <-events; e.Kind != post.EventError || !errors.Is(e.Err, post.ErrUnknownHost) {
		t.Errorf("event %v %v, want EventError wrapping ErrUnknownHost", e.Kind, e.Err)
	}
	if err := c.Flush(ctx); !errors.Is(err, post.ErrUnknownHost) {
		t.Errorf("Flush: %v", err)
	}
	if err := c.Close(); !errors.Is(err, post.ErrUnknownHost) {
		t.Errorf("Close: %v", err)
	}
}
