package httpcarrier

import (
	"context"

	"github.com/postsockets/postsockets/carrier"
)

// closeLater closes c in the background, where the Transport can wait for
// it (CloseIdleConnectionsContext).
func (t *Transport) closeLater(c *carrier.Carrier) {
	done := make(chan struct{})
	t.closingMu.Lock()
	if t.closing == nil {
		t.closing = map[chan struct{}]struct{}{}
	}
	t.closing[done] = struct{}{}
	t.closingMu.Unlock()
	go func() {
		c.Close()
		t.closingMu.Lock()
		delete(t.closing, done)
		t.closingMu.Unlock()
		close(done)
	}()
}

// CloseIdleConnectionsContext is CloseIdleConnections that then waits
// until every Carrier the Transport is closing has closed (each Close
// returns once the server's stack has everything, at most
// Config.Linger), or ctx ends. A program about to exit calls it: an exit
// right after CloseIdleConnections, whose closes run in the background,
// can leave the server holding the roots until its idle timeout. Roots
// with requests in flight close when those end, and are waited for only
// if they end before ctx does.
func (t *Transport) CloseIdleConnectionsContext(ctx context.Context) error {
	t.CloseIdleConnections()
	for {
		t.closingMu.Lock()
		var done chan struct{}
		for d := range t.closing {
			done = d
			break
		}
		t.closingMu.Unlock()
		if done == nil {
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
