package fsp

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// TestUnconfirmedClientReset: the listener gives a handshake up after its
// answer left, its HandshakeTimeout over before the client's first
// protected packet came (TestManyDials saw it on a loaded host, the
// answer repeated to a client too busy to read it), and forgets the
// connection. The dialer, established but not yet confirmed, believes the
// RESET its next packet gets and fails with post.ErrReset rather than
// waiting out its idle timeout.
func TestUnconfirmedClientReset(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.HandshakeTimeout = 300 * time.Millisecond
	ccfg.IdleTimeout = 5 * time.Minute // beyond the test's context
	l := listen(t, scfg)
	var hold atomic.Bool
	var held atomic.Int32
	hold.Store(true)
	ct := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		if hold.Load() && len(b) > 1 && wire.Opcode(b[1]) > wire.AckConnectReq {
			held.Add(1) // a protected packet: the client has the answer
			return
		}
		send(b)
	}}}
	t.Cleanup(func() { ct.Close() })
	ctx := testContext(t)
	c, err := ct.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tr := l.Transport()
	for tr.PendingHandshakes() > 0 || held.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatalf("%d handshakes pending, %d client packets held", tr.PendingHandshakes(), held.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	hold.Store(false)
	_, err = c.ReceiveMessage(ctx)
	if !errors.Is(err, post.ErrReset) {
		t.Fatalf("receive after the listener forgot the handshake: %v, want post.ErrReset", err)
	}
	t.Logf("%d packets held, then: %v", held.Load(), err)
}
