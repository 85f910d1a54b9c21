package quic

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/childproc"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

var resetPSK = []byte("stateless reset test key 0123456")

// TestResetListenerProcess is the listener TestRestartedListenerResets
// starts and kills; it does nothing in a normal run.
func TestResetListenerProcess(t *testing.T) {
	addr := os.Getenv("PSI_QUIC_RESET_LISTEN")
	if addr == "" {
		t.Skip("run by TestRestartedListenerResets")
	}
	var st Stack
	l, err := st.Listen(t.Context(), netip.MustParseAddrPort(addr), &psi.Config{Security: psi.Security{PSK: resetPSK}})
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("listening", l.Addr())
	for {
		if _, err := l.Accept(t.Context()); err != nil {
			return
		}
	}
}

// startResetListener runs TestResetListenerProcess listening on addr
// and returns its process and address.
func startResetListener(t *testing.T, addr string) (*exec.Cmd, netip.AddrPort) {
	t.Helper()
	return childproc.Listener(t, "TestResetListenerProcess", "PSI_QUIC_RESET_LISTEN="+addr)
}

// TestRestartedListenerResets: a listener that crashed (kill -9) and was
// started again with the same key on the same port resets the
// connections of its predecessor at their next packet (a stateless reset
// keyed by the listener's private key), instead of leaving them to the
// idle timeout (an hour here, so only the reset can end it).
func TestRestartedListenerResets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts listener processes")
	}
	ctx := testContext(t)
	first, addr := startResetListener(t, "127.0.0.1:0")
	var st Stack
	c, err := st.Dial(ctx, addr, &psi.Config{Security: psi.Security{PSK: resetPSK}, IdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMessage(ctx, []byte("hello"), true, nil); err != nil {
		t.Fatal(err)
	}
	first.Process.Kill()
	first.Wait()
	startResetListener(t, addr.String())
	var werr error
	for werr == nil && ctx.Err() == nil { // the reset answers the next packet
		werr = c.WriteMessage(ctx, []byte("anyone there?"), true, nil)
		if werr == nil {
			_, _, werr = c.ReadMessage(ctx, make([]byte, 16))
		}
	}
	if !errors.Is(werr, post.ErrReset) {
		t.Fatalf("after the listener's restart: %v; want an error wrapping post.ErrReset", werr)
	}
	t.Logf("reset: %v", werr)
}
