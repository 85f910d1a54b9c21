package netem

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Drop binds a UDP socket to addr and drops every datagram it gets, so
// that a peer sending there hears nothing (no ICMP refusal either), as
// behind a firewall that drops UDP. A port still held by a closing
// listener is tried again until wait passes. Close the returned conn to
// stop.
func Drop(addr netip.AddrPort, wait time.Duration) (*net.UDPConn, error) {
	deadline := time.Now().Add(wait)
	for {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err == nil {
			go func() {
				b := make([]byte, 65536)
				for {
					if _, _, err := pc.ReadFrom(b); err != nil {
						return
					}
				}
			}()
			return pc, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
