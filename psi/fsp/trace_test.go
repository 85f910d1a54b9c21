package fsp

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/internal/qlog"
)

// readTrace parses a trace file as JSON-SEQ.
func readTrace(t *testing.T, path string) (*qlog.Header, []qlog.Event) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, evs, err := qlog.ReadAll(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h, evs
}

// TestTraceLossyTransfer records a transfer over a lossy path and checks
// that the client's trace has the loss and recovery events its Stats
// count.
func TestTraceLossyTransfer(t *testing.T) {
	dir := t.TempDir()
	c, s := lossyPairConfig(t, netem.Config{Loss: 0.05, Delay: time.Millisecond, Seed: 13},
		func(cfg *Config) { cfg.TraceDir = dir })
	transfer(t, c, s, 2<<20) // closes the client
	s.Close()
	st := c.Stats()
	t.Logf("client stats %+v", st)

	h, evs := readTrace(t, filepath.Join(dir, fmt.Sprintf("fsp_client_%08x.sqlog", c.local)))
	if h.Trace.VantagePoint.Type != "client" || len(h.Trace.EventSchemas) != 1 || h.Trace.EventSchemas[0] != TraceSchema {
		t.Fatalf("header %+v", h)
	}
	count := map[string]int{}
	var sent, retx, received, lost, rtoLost uint64
	var cwnd, rtt bool
	for _, e := range evs {
		count[e.Name]++
		if e.Time < 0 {
			t.Fatalf("%s at %v ms, before the trace began", e.Name, e.Time)
		}
		switch e.Name {
		case "fsp:packet_sent":
			var p packetEvent
			if err := json.Unmarshal(e.Data, &p); err != nil {
				t.Fatal(err)
			}
			sent++
			if p.Retransmission {
				retx++
			}
		case "fsp:packet_received":
			received++
		case "fsp:packet_lost":
			lost++
		case "fsp:retransmission_timeout":
			var to timeoutEvent
			if err := json.Unmarshal(e.Data, &to); err != nil {
				t.Fatal(err)
			}
			rtoLost += uint64(to.Lost)
		case "fsp:metrics_updated":
			var m metricsEvent
			if err := json.Unmarshal(e.Data, &m); err != nil {
				t.Fatal(err)
			}
			cwnd = cwnd || m.CWND > 0
			rtt = rtt || m.LatestRTT > 0
		}
	}
	t.Logf("events %v", count)
	if st.PacketsLost == 0 || st.Retransmissions == 0 {
		t.Fatalf("no loss to trace: %+v", st)
	}
	if lost+rtoLost != st.PacketsLost || retx != st.Retransmissions {
		t.Errorf("trace: %d lost (+%d by timeout), %d retransmitted; Stats: %d lost, %d retransmitted",
			lost, rtoLost, retx, st.PacketsLost, st.Retransmissions)
	}
	if sent != st.PacketsSent || received != st.PacketsReceived {
		t.Errorf("trace: %d sent, %d received; Stats: %d sent, %d received", sent, received, st.PacketsSent, st.PacketsReceived)
	}
	for _, name := range []string{"fsp:connection_started", "fsp:packets_acked", "fsp:congestion_state_updated", "fsp:connection_closed"} {
		if count[name] == 0 {
			t.Errorf("no %s event", name)
		}
	}
	if !cwnd || !rtt {
		t.Errorf("metrics without congestion window (%v) or RTT sample (%v)", cwnd, rtt)
	}
	if evs[len(evs)-1].Name != "fsp:connection_closed" {
		t.Errorf("last event %s", evs[len(evs)-1].Name)
	}

	h, evs = readTrace(t, filepath.Join(dir, fmt.Sprintf("fsp_server_%08x.sqlog", s.local)))
	if h.Trace.VantagePoint.Type != "server" || len(evs) == 0 {
		t.Fatalf("server trace: %+v, %d events", h, len(evs))
	}
}

// TestTraceOff checks that without a directory no trace is written.
func TestTraceOff(t *testing.T) {
	t.Setenv(qlog.EnvDir, "")
	c, s := lossyPair(t, netem.Config{})
	if c.qlog != nil || s.qlog != nil {
		t.Fatal("tracing on without TraceDir")
	}
}

// TestTraceEnvironment switches tracing on by POSTSOCKETS_QLOGDIR.
func TestTraceEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(qlog.EnvDir, dir)
	c, s := lossyPair(t, netem.Config{})
	if err := c.SendMessage(testContext(t), []byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("fsp_client_%08x.sqlog", c.local))); err != nil {
		t.Fatal(err)
	}
}

// TestTraceKeyUpdate records a key update.
func TestTraceKeyUpdate(t *testing.T) {
	dir := t.TempDir()
	c, s := lossyPairConfig(t, netem.Config{}, func(cfg *Config) { cfg.TraceDir = dir })
	secret := make([]byte, 32)
	if err := c.InstallKey(secret); err != nil {
		t.Fatal(err)
	}
	if err := s.InstallKey(secret); err != nil {
		t.Fatal(err)
	}
	c.Abort(nil)
	_, evs := readTrace(t, filepath.Join(dir, fmt.Sprintf("fsp_client_%08x.sqlog", c.local)))
	for _, e := range evs {
		if e.Name == "fsp:key_updated" {
			return
		}
	}
	t.Fatal("no fsp:key_updated event")
}

// TestTraceMobility records the server's view of a client that moves: the
// new address is validated, and data follows it.
func TestTraceMobility(t *testing.T) {
	dir := t.TempDir()
	scfg, ccfg := pair(t)
	scfg.TraceDir = dir
	l := listen(t, scfg)
	mc := newMovingConn(t)
	tr := &Transport{Conn: mc}
	t.Cleanup(func() { mc.Close(); tr.Close() })
	ctx := testContext(t)
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	first := s.RemoteAddr().String()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 2 || s.RemoteAddr().String() == first; i++ {
		if i == 1 {
			mc.move(t)
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not follow the client")
		}
		go c.SendMessage(ctx, []byte("ping"))
		if _, err := s.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
		go s.SendMessage(ctx, []byte("pong"))
		if _, err := c.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	moved := s.RemoteAddr().String()
	s.Abort(nil)
	_, evs := readTrace(t, filepath.Join(dir, fmt.Sprintf("fsp_server_%08x.sqlog", s.local)))
	var validated, migrated bool
	for _, e := range evs {
		var p pathEvent
		switch e.Name {
		case "fsp:path_validated":
			json.Unmarshal(e.Data, &p)
			validated = validated || p.Address == moved
		case "fsp:path_migrated":
			json.Unmarshal(e.Data, &p)
			migrated = migrated || p.Address == moved && p.From != ""
		}
	}
	if !validated || !migrated {
		t.Fatalf("to %s: validated %v, migrated %v", moved, validated, migrated)
	}
}
