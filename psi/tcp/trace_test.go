package tcp_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/qlog"
	"github.com/postsockets/postsockets/psi/tcp"
)

// TestTrace checks that Config.TraceDir makes each end write a JSON-SEQ
// trace of TCP_INFO samples that ends when the transient closes.
func TestTrace(t *testing.T) {
	dir := t.TempDir()
	var s tcp.Stack
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.TraceDir, ccfg.TraceDir = dir, dir
	c, sv := connect(t, s, listen(t, s, scfg), ccfg)
	rng := rand.New(rand.NewPCG(1, 2))
	msg := randomBytes(rng, 1<<20)
	go send(c, msg, rng)
	if got, err := recv(sv, 64<<10); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("received %d bytes, %v", len(got), err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Close returns once the trace is written out: a program that exits
	// right after it keeps its trace.
	if !closedTrace(t, dir, "client") {
		t.Fatal("the client's trace is not complete when Close returns")
	}
	sv.Close()
	want := map[string]bool{"client": false, "server": false}
	deadline := time.Now().Add(5 * time.Second)
	for {
		done := true
		for role := range want {
			want[role] = closedTrace(t, dir, role)
			done = done && want[role]
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("complete traces per role: %v", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closedTrace reports whether dir holds a complete trace for role, and
// on Linux that it has RTT and congestion window samples.
func closedTrace(t *testing.T, dir, role string) bool {
	paths, _ := filepath.Glob(filepath.Join(dir, "tcp_"+role+"_*.sqlog"))
	if len(paths) != 1 {
		return false
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	h, evs, err := qlog.ReadAll(bytes.NewReader(b))
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Name != "tcp:connection_closed" {
		return false // not written out yet
	}
	if h.Trace.VantagePoint.Type != role || h.Trace.EventSchemas[0] != tcp.TraceSchema {
		t.Fatalf("header %+v", h)
	}
	if runtime.GOOS != "linux" {
		return true
	}
	for _, e := range evs {
		var m struct {
			RTT  float64 `json:"smoothed_rtt"`
			CWND uint64  `json:"congestion_window"`
		}
		if e.Name == "tcp:metrics_updated" && json.Unmarshal(e.Data, &m) == nil && m.RTT > 0 && m.CWND > 0 {
			return true
		}
	}
	t.Fatalf("%s trace has no RTT and window sample", role)
	return false
}
