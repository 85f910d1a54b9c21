package tcp_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/tcp"
)

// peerEndBound is the test's limit on the blocked write's end after the
// peer's Close: a hang limit, far above the milliseconds the watch takes
// and below the many seconds a zero-window probe's backoff can reach.
const peerEndBound = 10 * time.Second

// TestPeerCloseEndsBlockedWrite closes one end while the other is blocked
// writing a message it does not read, with every TCP reset dropped: the
// closing side's reset of the unread data is lost, as it sometimes is on
// a loaded host, and so is the one answering the writer's zero-window
// probes, whose interval backs off to seconds. The write fails with
// post.ErrClosed once the peer's FIN arrives, and the writer still reads
// what the peer sent before its Close.
func TestPeerCloseEndsBlockedWrite(t *testing.T) {
	a, b, ns := nsPair(t, "tcppeerend")
	defer b.(psi.Aborter).Abort(nil) // its data is never acknowledged
	if err := ns.Drop(100, "tcp flags & rst != 0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	werr := make(chan error, 1)
	go func() { werr <- b.WriteMessage(ctx, make([]byte, 256<<20), true, nil) }()
	if err := a.WriteMessage(ctx, []byte("last"), true, nil); err != nil {
		t.Fatal(err)
	}
	// B fills the windows and blocks; its probes back off meanwhile.
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-werr:
		t.Fatalf("the write to a peer that does not read ended: %v", err)
	default:
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close while the peer is blocked writing: %v", err)
	}
	select {
	case err := <-werr:
		if !errors.Is(err, post.ErrClosed) || errors.Is(err, post.ErrReset) {
			t.Fatalf("blocked write after the peer's Close: %v, want post.ErrClosed", err)
		}
	case <-time.After(peerEndBound):
		t.Fatalf("the blocked write did not end %v after the peer's Close", peerEndBound)
	}
	if m, err := recv(b, 64); err != nil || string(m) != "last" {
		t.Fatalf("reading the peer's last message after the write failed: %q, %v", m, err)
	}
	if _, _, err := b.ReadMessage(ctx, make([]byte, 8)); err != io.EOF {
		t.Fatalf("read after the peer's last message: %v, want io.EOF", err)
	}
	if err := b.WriteMessage(ctx, []byte("x"), true, nil); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("write after the peer's Close: %v, want post.ErrClosed", err)
	}
}

// nsPair connects two transients in a network namespace of their own.
func nsPair(t *testing.T, name string) (a, b psi.Transient, ns *netns.NS) {
	t.Helper()
	netns.Require(t)
	ns = netns.New(t, name)
	err := ns.Do(func() error {
		var s tcp.Stack
		a, b = connect(t, s, listen(t, s, serverConfig()), clientConfig())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, b, ns
}
