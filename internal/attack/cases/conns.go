package cases

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/quic"
	"github.com/postsockets/postsockets/psi/tcp"
)

// connsBound is the listeners' per-source connection bound
// (MaxConnsPerSource) in the rows that hold connections: small, so a
// short run reaches it (an eighth of it under the race detector,
// attack.Paced); the default, 1,024, is checked by each stack's tests.
var connsBound = attack.Paced(64)

// FSPConnsOneSource, QUICConnsOneSource and TCPConnsOneSource complete
// handshakes from 127.0.0.2, four at a time, and hold every connection
// they get open and idle, while a client dials from 127.0.1.x, a new
// address each time; the listener's application serves each connection
// until its peer ends it.
// The listener lets one source hold connsBound connections: the attacker
// must never hold more, must be refused past them with post.ErrRefused,
// and the client must get in.
func FSPConnsOneSource(o attack.Options) (*attack.Result, error) {
	return connsOneSource(o, "FSP", &fsp.Stack{Base: &fsp.Config{MaxConnsPerSource: connsBound}})
}

// QUICConnsOneSource: see FSPConnsOneSource.
func QUICConnsOneSource(o attack.Options) (*attack.Result, error) {
	return connsOneSource(o, "QUIC", &quic.Stack{MaxConnsPerSource: connsBound})
}

// TCPConnsOneSource: see FSPConnsOneSource.
func TCPConnsOneSource(o attack.Options) (*attack.Result, error) {
	return connsOneSource(o, "TCP", tcp.Stack{MaxConnsPerSource: connsBound})
}

// TCPConnsOnePrefix holds connections as TCPConnsOneSource does, from
// four addresses of 127.0.0.0/24 in turn (127.0.0.2 to .5), each allowed
// connsBound, against a listener that holds 4·connsBound in all
// (Stack.MaxConns), a /24 a quarter of that: together they must never
// hold more than connsBound.
func TCPConnsOnePrefix(o attack.Options) (*attack.Result, error) {
	return connsHeld(o, fmt.Sprintf("TCP connections held from four addresses of one /24, bound %d", connsBound),
		tcp.Stack{MaxConnsPerSource: connsBound, MaxConns: 4 * connsBound}, 4)
}

func connsOneSource(o attack.Options, stack string, st psi.Stack) (*attack.Result, error) {
	return connsHeld(o, fmt.Sprintf("%s connections held from one address, bound %d", stack, connsBound), st, 1)
}

// connsHeld runs a row holding connections from addrs addresses,
// 127.0.0.2 on, whose share together is connsBound.
func connsHeld(o attack.Options, name string, st psi.Stack, addrs int) (*attack.Result, error) {
	refused := post.ErrRefused
	ctx := context.Background()
	p := testcert.Must()
	scfg := &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{p.Leaf}}}
	ln, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"), scfg)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	serve(ctx, ln, func(t psi.Transient) {
		buf := make([]byte, 512)
		for {
			if _, _, err := t.ReadMessage(ctx, buf); err != nil {
				break
			}
		}
		t.Close()
	})
	ccfg := &psi.Config{Security: psi.Security{RootCAs: p.Pool, ServerName: "localhost"}}
	var h *attack.Held
	var legit, attacker atomic.Uint32
	c := attack.Case{
		Name:   name,
		Budget: 32 << 20,
		Dial: func(ctx context.Context) error {
			// Each dial from an address of its own, in another /24: the
			// client's own dials, ten a second, each counted until the
			// listener's end of it closes, held a bound of 8 (under -race)
			// from one address when a loaded host slowed them to a second.
			cfg := *ccfg
			cfg.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(1 + legit.Add(1)%250)}), 0)
			t, err := st.Dial(ctx, ln.Addr(), &cfg)
			if err != nil {
				return err
			}
			return t.Close()
		},
		Attack: func(ctx context.Context, _ *attack.Bytes) {
			h = attack.HoldConns(ctx, 4, func(ctx context.Context) (io.Closer, error) {
				acfg := *ccfg
				acfg.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + attacker.Add(1)%uint32(addrs))}), 0)
				return st.Dial(ctx, ln.Addr(), &acfg)
			}, refused)
		},
		Check: func() (string, error) {
			note := fmt.Sprintf("attacker held at most %d connections, %d dials refused", h.Most, h.Refused)
			switch {
			case h.Most > connsBound:
				return note, fmt.Errorf("the attacker held %d connections, over the bound of %d", h.Most, connsBound)
			case h.Most < connsBound || h.Refused == 0:
				return note, fmt.Errorf("the attacker never reached the bound of %d (held %d, %d refused)", connsBound, h.Most, h.Refused)
			case len(h.Other) > 0:
				return note, fmt.Errorf("dials failed otherwise than with %v: %v", refused, h.Other)
			}
			return note, nil
		},
	}
	return attack.Run(c, o), nil
}
