package tcp_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netns"
)

// TestCloseWithUnreadInput closes an end that left the peer's message
// unread. Close drops the unread input first, so the kernel ends the
// connection with a FIN rather than a reset, and the peer reads the last
// message and a clean end of stream.
func TestCloseWithUnreadInput(t *testing.T) {
	a, b, ns := nsPair(t, "tcpunread")
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.WriteMessage(ctx, make([]byte, 100_000), true, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteMessage(ctx, []byte("last"), true, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // b's message reaches a's kernel
	before := outResets(t, ns)
	if err := a.Close(); err != nil {
		t.Fatalf("Close with unread input: %v", err)
	}
	if n := outResets(t, ns) - before; n != 0 {
		t.Errorf("Close with unread input sent %d resets, want 0", n)
	}
	if m, err := recv(b, 64); err != nil || string(m) != "last" {
		t.Fatalf("reading the peer's last message: %q, %v", m, err)
	}
	if _, _, err := b.ReadMessage(ctx, make([]byte, 8)); err != io.EOF {
		t.Fatalf("read after the peer's last message: %v, want io.EOF", err)
	}
}

// outResets reads the namespace's count of TCP resets sent.
func outResets(t *testing.T, ns *netns.NS) int {
	t.Helper()
	n, err := ns.SNMP("Tcp", "OutRsts")
	if err != nil {
		t.Fatal(err)
	}
	return n
}
