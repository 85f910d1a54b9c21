package netem_test

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
)

// A lossy, slow uplink for a socket that can be handed to quic-go
// (quic.Transport{Conn: c}) or to the FSP transport.
func ExampleNew() {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	c := netem.New(udp, netem.Config{
		Loss:  0.01,
		Delay: 20 * time.Millisecond,
		Rate:  1 << 20, // 1 MiB/s bottleneck, 100 ms queue
		Seed:  1,
	})
	defer c.Close()
	c.SetBlackhole(true) // e.g. the Wi-Fi went away
	c.WriteTo([]byte("lost"), c.LocalAddr())
	fmt.Println(c.Stats().Dropped)
	// Output: 1
}

// A relay between a client and a UDP server: the server sees the
// relay's per-client upstream port, and Rebind changes it like a NAT
// that lost its mapping.
func ExampleNewRelay() {
	server, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer server.Close()
	r, err := netem.NewRelay(server.LocalAddr().(*net.UDPAddr).AddrPort(),
		netem.Config{Delay: 5 * time.Millisecond}, // client to server
		netem.Config{Delay: 5 * time.Millisecond}) // server to client
	if err != nil {
		panic(err)
	}
	defer r.Close()
	client, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer client.Close()
	client.WriteToUDPAddrPort([]byte("hi"), r.Addr())
	buf := make([]byte, 16)
	n, from, _ := server.ReadFromUDPAddrPort(buf)
	fmt.Println(string(buf[:n]), from.Addr() == netip.MustParseAddr("127.0.0.1"))
	// Output: hi true
}
