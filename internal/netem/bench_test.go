package netem

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// pingPong measures round trips of 1200-byte datagrams to an echo server.
func pingPong(b *testing.B, to netip.AddrPort) {
	c := listenUDP(b)
	p := make([]byte, 1200)
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.WriteToUDPAddrPort(p, to); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripDirect is the baseline for BenchmarkRelayRoundTrip.
func BenchmarkRoundTripDirect(b *testing.B) {
	server, _ := echoServer(b)
	pingPong(b, server)
}

// BenchmarkRelayRoundTrip crosses a perfect relay twice per iteration.
func BenchmarkRelayRoundTrip(b *testing.B) {
	server, _ := echoServer(b)
	r := newRelay(b, server, Config{}, Config{})
	pingPong(b, r.Addr())
}

// BenchmarkRelayRoundTripImpaired exercises the scheduler on every packet.
func BenchmarkRelayRoundTripImpaired(b *testing.B) {
	server, _ := echoServer(b)
	r := newRelay(b, server, Config{Delay: time.Microsecond, Loss: 1e-9}, Config{Delay: time.Microsecond})
	pingPong(b, r.Addr())
}

// BenchmarkRelayThroughput pushes one-way traffic through the relay.
func BenchmarkRelayThroughput(b *testing.B) {
	sink := listenUDP(b)
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	r := newRelay(b, sink.LocalAddr().(*net.UDPAddr).AddrPort(), Config{}, Config{})
	c := listenUDP(b)
	p := make([]byte, 1200)
	to := r.Addr()
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		c.WriteToUDPAddrPort(p, to)
	}
	b.StopTimer()
	st := r.Stats()
	b.ReportMetric(float64(st.Up.Packets)/float64(b.N), "forwarded/op")
}

// BenchmarkWriteTo measures PacketConn.WriteTo with and without
// scheduling; both should report 0 allocs/op.
func BenchmarkWriteTo(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"perfect", Config{}},
		{"delayed", Config{Delay: 100 * time.Microsecond}},
		{"lossy", Config{Loss: 0.5}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			sink := listenUDP(b)
			go func() {
				buf := make([]byte, 2048)
				for {
					if _, err := sink.Read(buf); err != nil {
						return
					}
				}
			}()
			c := New(listenUDP(b), bc.cfg)
			defer c.Close()
			to := sink.LocalAddr()
			p := make([]byte, 1200)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				c.WriteTo(p, to)
				for c.out.backlog() > 64 { // a sender limited by its window
					runtime.Gosched()
				}
			}
		})
	}
}
