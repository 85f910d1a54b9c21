// Package ctxend tells whether a context has ended, counting a deadline
// that has passed before the context's own timer marked it done.
//
// A stack that maps a context's deadline onto its socket (TCP, psi/raw,
// a QUIC stream's read deadline) can fail a call with a timeout a moment
// before ctx.Err() reports anything. Classifying that failure by
// ctx.Err() alone takes the caller's own deadline for a failed transient.
package ctxend

import (
	"context"
	"time"
)

// Err returns ctx's error, or context.DeadlineExceeded once ctx's
// deadline has passed even if ctx is not done yet.
func Err(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
