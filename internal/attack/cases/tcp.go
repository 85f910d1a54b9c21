package cases

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/tcp"
)

// TCPSlowloris64 holds 8 idle sockets from each of 64 /24 prefixes,
// reconnecting as soon as the listener drops one: together they can take
// every handshake slot.
func TCPSlowloris64(o attack.Options) (*attack.Result, error) {
	return tcpSlowloris(o, "TCP slowloris from 64 /24 prefixes", nil, 64)
}

// TCPSlowloris holds idle sockets open against a TCP+TLS listener: 300
// from 127.0.0.2 and 8 from each of 12 other /24 prefixes, reconnecting
// as soon as the listener drops one, while a client dials from 127.0.0.1.
func TCPSlowloris(o attack.Options) (*attack.Result, error) {
	return tcpSlowloris(o, "TCP slowloris", []netip.Addr{netip.MustParseAddr("127.0.0.2")}, 12)
}

// tcpSlowloris holds 300 idle sockets from each address in one and 8
// from each of the first prefixes /24 prefixes of attack.Sources.
func tcpSlowloris(o attack.Options, name string, one []netip.Addr, prefixes int) (*attack.Result, error) {
	ctx := context.Background()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	ln, err := tcp.Stack{}.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	serve(ctx, ln, closeTransient)
	ccfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}}
	var held, most int
	c := attack.Case{
		Name:   name,
		Budget: 32 << 20,
		Dial: func(ctx context.Context) error {
			t, err := tcp.Stack{}.Dial(ctx, ln.Addr(), ccfg)
			if err != nil {
				return err
			}
			return t.Close()
		},
		Attack: func(ctx context.Context, b *attack.Bytes) {
			done := make(chan struct{})
			var h2, m2 int
			go func() {
				h2, m2 = attack.Slowloris(ctx, ln.Addr(), attack.Sources(prefixes), 8, b)
				close(done)
			}()
			held, most = attack.Slowloris(ctx, ln.Addr(), one, 300, b)
			<-done
			held += h2
			most += m2
		},
		Check: func() (string, error) {
			return fmt.Sprintf("attacker opened up to %d sockets, %d still open at the end", most, held), nil
		},
	}
	return attack.Run(c, o), nil
}
