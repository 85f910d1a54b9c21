package psitest

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// Relay is a middlebox between two ends on loopback (a proxy, a load
// balancer) that a test can make go dark: from Darken on it still takes
// everything sent to it, and a TCP relay's kernel still acknowledges it,
// but it forwards nothing either way. To the ends' kernels the path looks
// alive; only an end-to-end check can tell that the peer is gone.
type Relay struct {
	addr netip.AddrPort
	dark atomic.Bool
}

// Addr is where to dial to reach the target through the relay.
func (r *Relay) Addr() netip.AddrPort { return r.addr }

// Darken stops forwarding, for good.
func (r *Relay) Darken() { r.dark.Store(true) }

// TCPRelay relays each TCP connection made to it to target. It reads and
// discards what it no longer forwards, so its kernel acknowledges every
// byte and answers keep-alives. It is closed with t.
func TCPRelay(t testing.TB, target netip.AddrPort) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false
		}
		conns = append(conns, c)
		return true
	}
	conns = []net.Conn{}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				c.Close()
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				var up net.Conn
				if !r.dark.Load() {
					up, _ = net.Dial("tcp", target.String())
				}
				if up == nil || !track(up) {
					// No way on (or dark from the start): a black hole.
					io.Copy(io.Discard, c)
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.pipe(up, c)
				}()
				r.pipe(c, up)
			}()
		}
	}()
	return r
}

// pipe copies from src to dst until either fails, and once dark goes on
// reading src and dropping what it reads. It passes on neither end's
// close once dark.
func (r *Relay) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !r.dark.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil && !r.dark.Load() {
				src.Close()
				return
			}
		}
		if err != nil {
			if !r.dark.Load() {
				if errors.Is(err, io.EOF) {
					if tc, ok := dst.(*net.TCPConn); ok {
						tc.CloseWrite()
						return
					}
				}
				dst.Close()
			}
			return
		}
	}
}

// UDPRelay relays datagrams between target and the one client that
// sends to it first (from one address). Dark, it drops them: for UDP
// that is all a middlebox that goes dark can do. It is closed with t.
func UDPRelay(t testing.TB, target netip.AddrPort) *Relay {
	t.Helper()
	front, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		front.Close()
		t.Fatal(err)
	}
	r := &Relay{addr: front.LocalAddr().(*net.UDPAddr).AddrPort()}
	var client atomic.Pointer[netip.AddrPort]
	var wg sync.WaitGroup
	t.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := front.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			client.CompareAndSwap(nil, &from)
			if !r.dark.Load() {
				back.WriteToUDPAddrPort(buf[:n], target)
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, _, err := back.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if c := client.Load(); c != nil && !r.dark.Load() {
				front.WriteToUDPAddrPort(buf[:n], *c)
			}
		}
	}()
	return r
}
