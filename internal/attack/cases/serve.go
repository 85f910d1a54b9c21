package cases

import (
	"context"

	"github.com/postsockets/postsockets/psi"
)

// serve hands every transient ln accepts, until ln closes, to handle in a
// goroutine of its own.
func serve(ctx context.Context, ln psi.Listener, handle func(psi.Transient)) {
	go func() {
		for {
			t, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go handle(t)
		}
	}()
}

// closeTransient closes t at once: a listener's application that takes
// nothing.
func closeTransient(t psi.Transient) { t.Close() }
