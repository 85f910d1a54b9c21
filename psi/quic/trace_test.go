package quic

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	sDone := make(chan struct{})
	go func() { s.Close(); close(sDone) }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Close returns with the trace written out: a program that exits
	// right after it keeps the trace.
	roles, err := readTraces(dir, "client")
	if err != nil || roles["client"] == 0 {
		t.Fatalf("client trace when Close returned: %v, %v", roles, err)
	}
	<-sDone
	if roles, err = readTraces(dir, "server"); err != nil || roles["server"] == 0 {
		t.Fatalf("server trace when Close returned: %v, %v", roles, err)
	}
	roles, err = readTraces(dir, "")
	t.Logf("events per role %v, %v", roles, err)
}

// readTraces parses every quic trace in dir (of role, if set), returning
// the events per vantage point.
func readTraces(dir, role string) (map[string]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	roles := map[string]int{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "quic_"+role) || !strings.HasSuffix(e.Name(), ".sqlog") {
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
