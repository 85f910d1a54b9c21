package fsp

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/post"
)

// TestZeroRTTHandshakeErr: HandshakeErr is nil on a 0-RTT dial whose
// handshake completed, and says why on one whose handshake failed after
// Dial returned: the listener's port now drops every datagram
// (post.ErrTimeout) or refuses them (post.ErrRefused). The carrier sends
// the first message again elsewhere on that answer.
func TestZeroRTTHandshakeErr(t *testing.T) {
	for _, tc := range []struct {
		name string
		drop bool
		want error
	}{
		{"dropped", true, post.ErrTimeout},
		{"refused", false, post.ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scfg, ccfg := pair(t)
			scfg.Allow0RTT, ccfg.Allow0RTT = true, true
			ccfg.Security.SessionCache = tls.NewLRUClientSessionCache(4)
			l := listen(t, scfg)
			c0, s0 := connect(t, l, ccfg)
			pingPong(t, c0, s0)
			waitTicket(t, ccfg.Security.SessionCache, c0)
			c0.Close()
			s0.Close()
			ctx := testContext(t)
			addr := addrOf(l)
			c, err := Dial(ctx, addr, ccfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.SendMessage(ctx, []byte("early")); err != nil {
				t.Fatal(err)
			}
			s := acceptWant(t, ctx, l, "early")
			pingPong(t, c, s)
			if err := c.HandshakeErr(); err != nil {
				t.Fatalf("a completed handshake reports %v", err)
			}
			waitTicket(t, ccfg.Security.SessionCache, c)
			c.Close()
			s.Close()
			l.Close()

			pc, err := netem.Drop(addr, 3*time.Second) // the port frees after time-wait
			if err != nil {
				t.Fatal(err)
			}
			if !tc.drop {
				pc.Close() // nothing there: refused
			} else {
				defer pc.Close()
			}
			cfg := *ccfg
			cfg.HandshakeTimeout = time.Second
			c2, err := Dial(ctx, addr, &cfg)
			if err != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("dial: %v, want one wrapping %v", err, tc.want)
				}
				t.Logf("the dial failed before it returned: %v", err)
				return
			}
			defer c2.Close()
			select {
			case <-c2.HandshakeComplete():
			case <-ctx.Done():
				t.Fatal("HandshakeComplete still open")
			}
			if err := c2.HandshakeErr(); !errors.Is(err, tc.want) {
				t.Fatalf("HandshakeErr %v, want one wrapping %v", err, tc.want)
			}
		})
	}
}
