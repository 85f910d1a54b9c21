package carrier_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/tcp"
)

// busyTCP is TCP whose first listen on a given port number finds it
// taken, as when another program holds the TCP port of the number the
// UDP stacks picked.
type busyTCP struct {
	tcp.Stack
	failed atomic.Bool
}

func (b *busyTCP) Listen(ctx context.Context, local netip.AddrPort, cfg *psi.Config) (psi.Listener, error) {
	if local.Port() != 0 && !b.failed.Swap(true) {
		return nil, syscall.EADDRINUSE
	}
	return b.Stack.Listen(ctx, local, cfg)
}

// TestListenPortZeroSharedWhenTaken: with port 0, a TCP port taken on the
// number the UDP stack picked makes Listen pick another number for all,
// not listen on two, so "host:port" still reaches every stack
// (TestListenSharesPort failed this way on a busy machine).
func TestListenPortZeroSharedWhenTaken(t *testing.T) {
	cfg := serverConfig()
	cfg.Stacks = []psi.Stack{&fsp.Stack{}, &busyTCP{}}
	l, err := carrier.Listen(context.Background(), post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for name, a := range l.Addrs() {
		if a.Port() != l.Addr().Port() {
			t.Fatalf("%s listens on port %d, not %d: %v", name, a.Port(), l.Addr().Port(), l.Addrs())
		}
	}
}

// TestListenRefusesInterface: Listen binds Local.Addr only, so a Local
// naming an interface is refused (ErrNotSupported) rather than listened
// on every interface; before, the name was ignored.
func TestListenRefusesInterface(t *testing.T) {
	for _, name := range []string{"lo", "no-such-interface"} {
		l, err := carrier.Listen(ctxT(t), post.Local{Interface: name}, serverConfig())
		if l != nil {
			l.Close()
		}
		if !errors.Is(err, post.ErrNotSupported) {
			t.Fatalf("Listen on interface %q: %v, want ErrNotSupported", name, err)
		}
	}
}

// TestListenTakenPort: a port number another socket holds fails Listen
// with an error wrapping post.ErrInvalid (and the system's error), on
// the UDP and on the TCP side; before, it wrapped no sentinel.
func TestListenTakenPort(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		var port uint16
		if network == "udp" {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			port = uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		} else {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port = uint16(ln.Addr().(*net.TCPAddr).Port)
		}
		local := post.Local{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
		l, err := carrier.Listen(ctxT(t), local, serverConfig())
		if l != nil {
			l.Close()
		}
		if !errors.Is(err, post.ErrInvalid) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("%s port taken: %v, want ErrInvalid and EADDRINUSE", network, err)
		}
	}
}

// TestInitiatePortZero: a Remote on port 0 names nothing that listens;
// Initiate fails with an error wrapping post.ErrInvalid, on every stack
// and the race, instead of FSP waiting out its handshake timeout for an
// answer (the race then failed with post.ErrTimeout after 10 s, and QUIC
// alone with post.ErrMalformed).
func TestInitiatePortZero(t *testing.T) {
	for _, stack := range []string{"fsp", "quic", "tcp", ""} {
		ccfg := clientConfig()
		if stack != "" {
			ccfg.Policy.Stack(stack, policy.Require)
		}
		_, err := carrier.Initiate(ctxT(t), post.RemoteName("127.0.0.1:0"), ccfg)
		if !errors.Is(err, post.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", stack, err)
		}
	}
}
