package carrier

import (
	"context"
	"time"
)

// ctxEnded returns ctx's error, or context.DeadlineExceeded once its
// deadline has passed even if ctx's own timer has not yet marked it done:
// a stack that maps the deadline onto its socket can fail a call first,
// and that failure is still the caller's own, not the transient's.
func ctxEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
