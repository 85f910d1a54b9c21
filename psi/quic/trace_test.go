package quic

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/qlog"
)

// TestTrace checks that Config.TraceDir hands quic-go's qlog through: a
// file per connection and role that parses as JSON-SEQ.
func TestTrace(t *testing.T) {
	dir := t.TempDir()
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.TraceDir, ccfg.TraceDir = dir, dir
	c, s, _ := pair(t, &Stack{}, scfg, ccfg)
	ctx := testContext(t)
	send(t, ctx, c, []byte("traced"), nil)
	if got, err := readAll(ctx, s, 64); err != nil || string(got) != "traced" {
		t.Fatalf("read %q, %v", got, err)
	}
	c.Close()
	s.Close()
	// quic-go writes the trace out when the connection is gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		roles, err := readTraces(dir)
		if err == nil && roles["client"] > 0 && roles["server"] > 0 {
			t.Logf("events per role %v", roles)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("traces in %s: %v, %v", dir, roles, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readTraces parses every quic trace in dir, returning the events per
// vantage point.
func readTraces(dir string) (map[string]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	roles := map[string]int{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "quic_") || !strings.HasSuffix(e.Name(), ".sqlog") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		h, evs, err := qlog.ReadAll(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		if len(h.Trace.EventSchemas) == 0 || h.Trace.EventSchemas[0] != TraceSchema {
			return nil, os.ErrInvalid
		}
		if !strings.HasPrefix(e.Name(), "quic_"+h.Trace.VantagePoint.Type+"_") {
			return nil, os.ErrInvalid
		}
		roles[h.Trace.VantagePoint.Type] += len(evs)
	}
	return roles, nil
}
