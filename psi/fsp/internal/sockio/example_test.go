package sockio_test

import (
	"fmt"
	"log"
	"net"

	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
)

func Example() {
	a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	ca, cb := sockio.New(a), sockio.New(b)
	defer ca.Close()
	defer cb.Close()

	out := make([]sockio.Packet, 3)
	for i := range out {
		msg := fmt.Appendf(nil, "datagram %d", i)
		out[i] = sockio.Packet{Buf: msg, N: len(msg), Addr: cb.LocalAddr()}
	}
	if _, err := ca.WriteBatch(out); err != nil {
		log.Fatal(err)
	}

	in := make([]sockio.Packet, cb.MaxBatch())
	for i := range in {
		in[i].Buf = make([]byte, 1500)
	}
	for got := 0; got < len(out); {
		n, err := cb.ReadBatch(in)
		if err != nil {
			log.Fatal(err)
		}
		for _, p := range in[:n] {
			fmt.Printf("%s from sender: %v\n", p.Buf[:p.N], p.Addr == ca.LocalAddr())
		}
		got += n
	}
	// Output:
	// datagram 0 from sender: true
	// datagram 1 from sender: true
	// datagram 2 from sender: true
}
