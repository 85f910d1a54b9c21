package main_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMetricsConnsPerSource: the -metrics listener holds few connections
// from one address. Before, it had no limit and no idle timeout: 64 idle
// connections from one address were all held (and held forever), so an
// address could take every descriptor of the process.
func TestMetricsConnsPerSource(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	lst := exec.CommandContext(ctx, bin, "listen", "-json", "-metrics", "127.0.0.1:0", "127.0.0.1:0")
	lout, _ := lst.StdoutPipe()
	if err := lst.Start(); err != nil {
		t.Fatal(err)
	}
	defer lst.Process.Kill()
	url := next(t, jsonLines(t, lout), "metrics")["url"].(string)
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/metrics")
	const n = 64
	var held atomic.Int32
	var wg sync.WaitGroup
	for range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Go(func() {
			// One refused is closed at once; one held idles until the
			// deadline.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				held.Add(1)
			}
		})
	}
	wg.Wait()
	if h := held.Load(); h > 8 {
		t.Fatalf("the metrics listener held %d of %d idle connections from one address", h, n)
	}
}
