package quic

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// TestZeroRTTHandshakeFails: a 0-RTT dial to an address whose datagrams
// are now dropped returns before its handshake, which then times out:
// HandshakeComplete is closed and HandshakeErr wraps post.ErrTimeout, so
// the carrier knows its first message was not delivered. Until 2
// December HandshakeComplete was quic-go's, closed only when the
// handshake completed, and a failed one left it open for good.
func TestZeroRTTHandshakeFails(t *testing.T) {
	var st Stack
	scfg := serverConfig()
	scfg.Allow0RTT = true
	ctx := testContext(t)
	l, err := st.Listen(ctx, loopback, scfg)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := clientConfig()
	ccfg.Allow0RTT = true
	ccfg.HandshakeTimeout = time.Second
	ccfg.Security.SessionCache = tls.NewLRUClientSessionCache(4)
	c, err := st.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	send(t, ctx, c, []byte("one"), nil)
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(ctx, s, 64); err != nil {
		t.Fatal(err)
	}
	send(t, ctx, s, []byte("ack"), nil) // the ticket is in by the reply
	if _, err := readAll(ctx, c, 64); err != nil {
		t.Fatal(err)
	}
	if z := c.(psi.ZeroRTTReporter); z.HandshakeErr() != nil {
		t.Fatalf("a completed handshake reports %v", z.HandshakeErr())
	}
	c.Close()
	s.Close()
	addr := l.Addr()
	l.Close()

	pc, err := netem.Drop(addr, 3*time.Second) // the port frees once the connections are gone
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c2, err := st.Dial(ctx, addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	z := c2.(psi.ZeroRTTReporter)
	select {
	case <-z.HandshakeComplete():
	case <-ctx.Done():
		t.Fatal("HandshakeComplete still open after the handshake timed out")
	}
	if err := z.HandshakeErr(); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("HandshakeErr %v, want one wrapping post.ErrTimeout", err)
	}
}
