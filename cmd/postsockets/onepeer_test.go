package main_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// TestRecvTakesOnePeer: recv and cat -l take one peer; once they have it
// nobody else gets a connection. Before, their listener stayed open, so
// anyone who dialled while the file arrived got a connection, held with
// what it sent until the command ended (up to the stacks' bounds: 1,024
// connections a source).
func TestRecvTakesOnePeer(t *testing.T) {
	for _, stack := range []string{"fsp", "quic", "tcp"} {
		for _, cmd := range [][]string{{"recv", "-o", filepath.Join(t.TempDir(), "dst")}, {"cat", "-l"}} {
			t.Run(stack+"/"+cmd[0], func(t *testing.T) {
				ctx := ctxT(t, time.Minute)
				args := append(append([]string{cmd[0], "-json", "-stack", stack}, cmd[1:]...), "127.0.0.1:0")
				p := exec.CommandContext(ctx, bin, args...)
				pout, _ := p.StdoutPipe()
				var perr bytes.Buffer
				p.Stderr = &perr
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() {
					p.Process.Kill()
					p.Wait()
				}()
				lines := jsonLines(t, pout)
				pinHex := next(t, lines, "pin")["pin"].(string)
				addr := next(t, lines, "listening")["addr"].(string)
				b, _ := hex.DecodeString(pinHex)
				cfg := &carrier.Config{Security: psi.Security{PinnedKeys: []psi.Pin{psi.Pin(b)}}}
				cfg.Policy.Stack(stack, policy.Require)
				first, err := carrier.Initiate(ctx, post.RemoteName(addr), cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer first.Abort()
				// Send, so that the peer is accepted on every stack
				// (TCP and QUIC tell the listener at the first byte); recv
				// gets a file it has not all of yet.
				w, err := first.NewMessageWriter(ctx, post.Properties{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write([]byte("first")); err != nil {
					t.Fatal(err)
				}
				if cmd[0] == "cat" {
					w.Close()
				}
				next(t, lines, "accepted")
				for i := range 2 {
					dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
					c, err := carrier.Initiate(dctx, post.RemoteName(addr), cfg)
					cancel()
					if err == nil {
						c.Abort()
						t.Fatalf("dial %d after the peer was accepted connected\n%s", i+2, perr.String())
					}
				}
				// The first peer is still served.
				if cmd[0] == "recv" {
					w.Write([]byte(" and the rest"))
					if err := w.Close(); err != nil {
						t.Fatal(err)
					}
					if got := next(t, lines, "received")["bytes"]; got != float64(len("first and the rest")) {
						t.Fatalf("recv received %v bytes", got)
					}
					return
				}
				if err := first.Send(ctx, []byte("still here")); err != nil {
					t.Fatal(err)
				}
				if cmd[0] == "cat" {
					for _, want := range []string{"first", "still here"} {
						if got := next(t, lines, "message")["content"]; got != want {
							t.Fatalf("cat printed %q, want %q", got, want)
						}
					}
				}
			})
		}
	}
}
