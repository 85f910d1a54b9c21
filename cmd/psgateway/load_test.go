package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// h2load drives front with 8 concurrent HTTP/2 streams (h2c) on one
// connection for n requests of path, checks that all succeeded and
// returns the rate and the p99 latency.
func h2load(t *testing.T, front, path string, n int) (rps float64, p99 time.Duration) {
	t.Helper()
	if _, err := exec.LookPath("h2load"); err != nil {
		t.Skip("h2load is not installed (apt-get install nghttp2-client); skipping the load test")
	}
	logFile := filepath.Join(t.TempDir(), "h2load.log")
	out, err := exec.Command("h2load", "-n", strconv.Itoa(n), "-c", "1", "-m", "8", "--log-file", logFile, front+path).CombinedOutput()
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("%d succeeded, 0 failed, 0 errored, 0 timeout", n)) {
		t.Fatalf("h2load: not every request succeeded:\n%s", out)
	}
	m := regexp.MustCompile(`finished in [^,]+, ([0-9.]+) req/s`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("h2load output:\n%s", out)
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var lats []time.Duration
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if f[1] != "200" {
			t.Fatalf("status %s in h2load's log", f[1])
		}
		us, _ := strconv.ParseInt(f[2], 10, 64)
		lats = append(lats, time.Duration(us)*time.Microsecond)
	}
	if len(lats) != n {
		t.Fatalf("%d requests in h2load's log, want %d", len(lats), n)
	}
	slices.Sort(lats)
	return rps, lats[len(lats)*99/100]
}

// TestH2LoadThroughGateways: h2load (8 concurrent streams of small
// requests) → front gateway → FSP clones → back gateway → nginx. It
// reports the rate and p99; the assertion is only that every request
// succeeded.
func TestH2LoadThroughGateways(t *testing.T) {
	needCurl(t)
	root := t.TempDir()
	files(t, root, []int{1000})
	origin := nginx(t, root, "")
	front := "http://" + gateways(t, origin)
	rps, p99 := h2load(t, front, "/f1000.bin", 2000)
	t.Logf("h2load -c 1 -m 8, 2,000 requests of 1,000 bytes on loopback: %.0f req/s, p99 %v", rps, p99)
}
