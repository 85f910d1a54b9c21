package cases

import (
	"context"
	"crypto/tls"
	"net/netip"
	"runtime"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/quic"
)

// SharedPortJunk floods the UDP port a Carrier listener's FSP and QUIC
// share with the QUIC junk of QUICJunk while a QUIC client dials it:
// every datagram whose first octet is not FSP's passes through FSP's
// read loop to quic-go.
func SharedPortJunk(o attack.Options) (*attack.Result, error) {
	return sharedPortJunk(o, "QUIC junk datagrams to the port FSP and QUIC share", []netip.Addr{attackerAddr})
}

// floodPrefix is a /24 of attackers apart from the legitimate clients'
// (127.0.0.0/24, legitDial).
var floodPrefix = []netip.Addr{
	netip.MustParseAddr("127.0.1.1"), netip.MustParseAddr("127.0.1.2"),
}

// SharedPortPrefixJunk is SharedPortJunk from four addresses of another
// /24 (eight sockets flat out), to load the queue FSP's read loop keeps
// for quic-go faster than quic-go empties it: the queue is shared fairly
// between prefixes (psi/fsp foreign_queue.go), so the legitimate dials'
// Initials still get in.
func SharedPortPrefixJunk(o attack.Options) (*attack.Result, error) {
	return sharedPortJunk(o, "QUIC junk from one /24 to the port FSP and QUIC share", floodPrefix)
}

func sharedPortJunk(o attack.Options, name string, srcs []netip.Addr) (*attack.Result, error) {
	before := runtime.NumGoroutine()
	ctx := context.Background()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{testcert.Must().Leaf}}}
	fl, pc, err := (&fsp.Stack{}).ListenShared(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, err
	}
	defer fl.Close()
	serve(ctx, fl, closeTransient)
	st := &quic.Stack{}
	ql, err := st.ListenPacket(ctx, pc, scfg)
	if err != nil {
		pc.Close()
		return nil, err
	}
	defer ql.Close()
	serve(ctx, ql, closeTransient)
	ccfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}}
	var short attack.Bytes
	c := attack.Case{
		Name:   name,
		Budget: 32 << 20,
		Dial:   legitDial(st, fl.Addr(), ccfg),
		Attack: func(ctx context.Context, b *attack.Bytes) { junkFloodFrom(ctx, fl.Addr(), srcs, b, &short) },
		Check:  func() (string, error) { return junkCheck(&short, statelessReset) },
	}
	r := attack.Run(c, o)
	ql.Close()
	fl.Close()
	goroutinesBack(r, before)
	return r, nil
}
