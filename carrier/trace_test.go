package carrier_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/qlog"
)

// TestTrace checks that Config.Transient.TraceDir makes every stack write
// a trace of each connection, at both ends, that parses as JSON-SEQ.
func TestTrace(t *testing.T) { forStacks(t, testTrace) }

func testTrace(t *testing.T, stack string) {
	dir := t.TempDir()
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Transient.TraceDir, ccfg.Transient.TraceDir = dir, dir
	c, s := pairOn(t, stack, ccfg, scfg)
	c.Close()
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		missing := ""
		for _, role := range []string{"client", "server"} {
			if !traced(t, dir, stack, role) {
				missing = role
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			ents, _ := os.ReadDir(dir)
			t.Fatalf("no complete %s trace of the %s; the directory holds %v", stack, missing, ents)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// traced reports whether dir holds a trace of stack by role with events.
func traced(t *testing.T, dir, stack, role string) bool {
	paths, _ := filepath.Glob(filepath.Join(dir, stack+"_"+role+"_*.sqlog"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h, evs, err := qlog.ReadAll(bytes.NewReader(b))
		if err == nil && h.Trace.VantagePoint.Type == role && len(evs) > 0 {
			return true
		}
	}
	return false
}
