package attack

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// UDPFlood sends the packets next makes from pc to target, rate a second
// (as fast as it can when rate is zero), until ctx ends or next returns
// nil. It reads every reply, passes it to reply if set, and counts both
// directions in b. It returns the number of packets sent.
func UDPFlood(ctx context.Context, pc *net.UDPConn, target netip.AddrPort, rate int, next func() []byte, reply func([]byte), b *Bytes) int {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, _, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				if isTimeout(err) && ctx.Err() == nil {
					continue
				}
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if b != nil {
				b.Recv(n)
			}
			if reply != nil {
				reply(buf[:n])
			}
		}
	}()
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	sent := 0
	for ctx.Err() == nil {
		p := next()
		if p == nil {
			break
		}
		if _, err := pc.WriteToUDPAddrPort(p, target); err == nil {
			sent++
			if b != nil {
				b.Sent(len(p))
			}
		}
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
			}
		} else if sent%64 == 0 {
			time.Sleep(time.Millisecond) // leave the server some CPU on 2 cores
		}
	}
	<-ctx.Done()
	<-done
	return sent
}
