package cases

import (
	"flag"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
)

var duration = flag.Duration("attack.duration", 2*time.Second, "how long each attack runs")

// TestAttack runs every row for a few seconds; rows whose fix has not
// landed run but do not assert.
func TestAttack(t *testing.T) {
	for _, row := range All {
		t.Run(row.Name, func(t *testing.T) {
			r, err := row.Run(attack.Options{Duration: *duration, Baseline: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", r)
			if row.Open != "" {
				t.Skipf("open, not asserted: %s", row.Open)
			}
			r.Assert(t)
		})
	}
}
