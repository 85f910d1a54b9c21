package carrier_test

import (
	"testing"

	"github.com/postsockets/postsockets/internal/leakcheck"
)

// checkLeaks fails the test if goroutines started during it outlive it.
func checkLeaks(t *testing.T) { leakcheck.Check(t) }
