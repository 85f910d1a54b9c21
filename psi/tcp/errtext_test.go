package tcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
)

// TestErrorNamesOpOnce: a dial refused by the kernel names the operation
// and address once, not again inside the wrapped *net.OpError (issue 11:
// each error prefix appears once).
func TestErrorNamesOpOnce(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(l.Addr().String())
	l.Close() // nobody listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = Stack{}.Dial(ctx, addr, &psi.Config{Security: psi.Security{PSK: []byte("0123456789abcdef")}})
	if err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if n := strings.Count(err.Error(), "dial tcp "+addr.String()); n != 1 {
		t.Fatalf("%q names the dial %d times", err, n)
	}
	var oe *net.OpError
	if !errorsAs(err, &oe) {
		t.Fatalf("%q no longer wraps the *net.OpError", err)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// TestResetNamesOpOnce: a read cut by the peer's reset says "receive tcp
// A->B" once, not again as the *net.OpError's "read tcp A->B".
func TestResetNamesOpOnce(t *testing.T) {
	l := listenT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := &psi.Config{Security: psi.Security{PSK: []byte("0123456789abcdef")}}
	acc := make(chan psi.Transient, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err == nil {
			acc <- s
		}
	}()
	c, err := Stack{}.Dial(ctx, l.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMessage(ctx, []byte("hi"), true, nil); err != nil {
		t.Fatal(err)
	}
	s := <-acc
	s.(psi.Aborter).Abort(nil)
	_, _, err = c.ReadMessage(ctx, make([]byte, 16))
	if err == nil || strings.Contains(err.Error(), "read tcp") {
		t.Fatalf("read after the peer's reset: %v", err)
	}
}

func listenT(t *testing.T) psi.Listener {
	l, err := Stack{}.Listen(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), &psi.Config{Security: psi.Security{PSK: []byte("0123456789abcdef")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
