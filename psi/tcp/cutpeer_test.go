package tcp

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/postsockets/postsockets/post"
)

// TestPeerGoneWithoutCloseNotify: a peer whose connection ends in a FIN
// without TLS's close_notify (its process was killed, or exited without
// Close) did not close in order: the reader gets an error wrapping
// post.ErrReset, never io.EOF, whether the FIN came between messages or
// inside one. crypto/tls reports such a FIN at a record boundary as
// io.EOF; until 2 December the transient passed that on, so a Carrier
// whose peer was killed took it for an orderly close.
func TestPeerGoneWithoutCloseNotify(t *testing.T) {
	root := (&clientHello{kind: kindRoot}).marshal()
	for _, mid := range []bool{false, true} {
		name := "between messages"
		if mid {
			name = "inside a message"
		}
		t.Run(name, func(t *testing.T) {
			ln := testListener(t, Stack{})
			c := rawClient(t, ln.Addr(), root)
			ctx := context.Background()
			sv, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer sv.Close()
			mw := (&Stack{}).framer().NewWriter(c)
			mw.WriteMessage([]byte("whole"), true)
			if mid {
				mw.WriteMessage([]byte("a part"), false)
			}
			if err := mw.Flush(); err != nil {
				t.Fatal(err)
			}
			// What the kernel does for a process that dies: a FIN, no
			// close_notify.
			c.NetConn().Close()
			buf := make([]byte, 64)
			if n, end, err := sv.ReadMessage(ctx, buf); err != nil || !end || string(buf[:n]) != "whole" {
				t.Fatalf("the message before the cut: %q %v %v", buf[:n], end, err)
			}
			var rerr error
			for rerr == nil {
				_, _, rerr = sv.ReadMessage(ctx, buf)
			}
			if rerr == io.EOF || !errors.Is(rerr, post.ErrReset) {
				t.Fatalf("read after the peer's connection was cut: %v, want an error wrapping post.ErrReset", rerr)
			}
		})
	}
}
