//go:build !unix

package attack

import "time"

// CPU returns zero: this platform does not report it.
func CPU() time.Duration { return 0 }
