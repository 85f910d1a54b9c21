package tcp

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
)

// TestLivenessStep drives the liveness logic through time: heartbeats go
// only after a quiet interval with nothing unacknowledged; silence ends
// the peer after the idle timeout unless bytes arrive, our window is shut
// on unread data, or the connection is no longer established.
func TestLivenessStep(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms         int
		s          liveSample
		beat, dead bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"silent peer dies", []step{
			{ms: 500},
			{ms: 1000, beat: true},
			{ms: 1500, s: liveSample{sent: 26}}, // the heartbeat, seen
			{ms: 2000, s: liveSample{sent: 26}},
			{ms: 2500, s: liveSample{sent: 26}, beat: true},
			{ms: 2999, s: liveSample{sent: 52}},
			{ms: 3000, s: liveSample{sent: 52}, dead: true},
		}},
		{"bytes keep it", []step{
			{ms: 1000, s: liveSample{received: 1}, beat: true},
			{ms: 3500, s: liveSample{received: 2}, beat: true},
			{ms: 6000, s: liveSample{received: 3}, beat: true},
			{ms: 8999, s: liveSample{received: 3}, beat: true},
			{ms: 9000, s: liveSample{received: 3}, dead: true},
		}},
		{"no heartbeat while unacknowledged", []step{
			{ms: 1000, s: liveSample{queued: 10}},
			{ms: 2000, s: liveSample{queued: 10}},
			{ms: 2500, s: liveSample{queued: 0}, beat: true},
			{ms: 3000, dead: true},
		}},
		{"shut window excuses", []step{
			{ms: 2000, s: liveSample{shut: true}, beat: true},
			{ms: 4000, s: liveSample{shut: true}, beat: true},
			{ms: 4999},
			{ms: 6999, beat: true},
			{ms: 7000, dead: true},
		}},
		{"closing is not silence", []step{
			{ms: 5000, s: liveSample{over: true}},
			{ms: 9000, s: liveSample{over: true}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLiveness(t0, 3*time.Second, time.Second)
			for _, st := range tc.steps {
				beat, dead := l.step(at(st.ms), st.s)
				if beat != st.beat || dead != st.dead {
					t.Fatalf("at %d ms, %+v: beat %v dead %v, want %v %v", st.ms, st.s, beat, dead, st.beat, st.dead)
				}
			}
		})
	}
}

// TestLivenessOlderPeers: liveness frames are used only when both ends
// ask for them. A server given a hello without the option answers with
// version 1 and sends no heartbeat, however long the transient idles; a
// client whose server answers with version 1 sends none either.
func TestLivenessOlderPeers(t *testing.T) {
	if !liveReporting {
		t.Skip("no liveness frames on this system")
	}
	idle := 400 * time.Millisecond
	tune := func(c *psi.Config) *psi.Config { c.IdleTimeout, c.KeepAlive = idle, idle/4; return c }
	certs := testcert.Must()
	t.Run("old client", func(t *testing.T) {
		ln, err := Stack{}.Listen(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"),
			tune(&psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c := rawClient(t, ln.Addr(), (&clientHello{kind: kindRoot}).marshal())
		sv, err := ln.Accept(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer sv.Close()
		if live := sv.(*transient).live; live != 0 {
			t.Fatalf("server agreed liveness frames (%v) with a client that did not ask", live)
		}
		c.SetReadDeadline(time.Now().Add(3 * idle))
		if n, err := c.Read(make([]byte, 16)); n > 0 || !isTimeout(err) {
			t.Fatalf("an old client got %d bytes (%v) from an idle transient", n, err)
		}
	})
	t.Run("old server", func(t *testing.T) {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{certs.Leaf}})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan []byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			var h [clientHelloLen]byte
			if _, err := io.ReadFull(c, h[:]); err != nil {
				return
			}
			c.Write((&serverHello{status: statusOK, token: token{1}}).marshal())
			c.SetReadDeadline(time.Now().Add(3 * idle))
			b := make([]byte, 16)
			n, _ := c.Read(b)
			got <- append(h[:], b[:n]...)
		}()
		cl, err := Stack{}.Dial(context.Background(), ln.Addr().(*net.TCPAddr).AddrPort(),
			tune(&psi.Config{Security: psi.Security{RootCAs: certs.Pool}}))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.(psi.Aborter).Abort(nil)
		if live := cl.(*transient).live; live != 0 {
			t.Fatalf("client took liveness frames (%v) from a version 1 answer", live)
		}
		b := <-got
		if h, _ := parseClientHello(b[:clientHelloLen]); h.liveIdle() != idle {
			t.Errorf("client asked for liveness frames for %v, want %v", h.liveIdle(), idle)
		}
		if len(b) > clientHelloLen {
			t.Fatalf("client sent %x to a server that did not agree liveness frames", b[clientHelloLen:])
		}
	})
}
