package quic

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// TestRestOutlivesConnection: what the peer sent before an orderly Close
// that returned nil is read whole, message by message and then io.EOF,
// after the connection ended, also when the reader had read part of it
// before (the kept rest is trimmed as the stream is read).
func TestRestOutlivesConnection(t *testing.T) {
	var st Stack
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.IdleTimeout = time.Second
	ccfg.IdleTimeout = time.Second
	cli, srv, _ := pair(t, &st, scfg, ccfg)
	ctx := testContext(t)
	big := pattern(400<<10, 3) // within the initial stream window
	send(t, ctx, cli, []byte("first"), nil)
	if m, err := readAll(ctx, srv, 64); err != nil || string(m) != "first" {
		t.Fatalf("first message: %q, %v", m, err)
	}
	send(t, ctx, cli, big, nil)
	send(t, ctx, cli, []byte("last"), nil)
	if err := cli.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Read most of the big message while the connection lives, so that
	// the kept rest is trimmed.
	var head []byte
	buf := make([]byte, 64<<10)
	for len(head) < 250<<10 {
		n, end, err := srv.ReadMessage(ctx, buf)
		if err != nil || end {
			t.Fatalf("head of the big message: %d bytes, end %v, %v", len(head)+n, end, err)
		}
		head = append(head, buf[:n]...)
	}
	select {
	case <-srv.c.qc.Context().Done():
	case <-time.After(15 * time.Second):
		t.Fatal("connection still open 15 s after the peer closed, idle timeout 1 s")
	}
	tail, err := readAll(ctx, srv, 64<<10)
	if err != nil || !bytes.Equal(append(head, tail...), big) {
		t.Fatalf("big message after the connection ended: %d+%d bytes (want %d), %v", len(head), len(tail), len(big), err)
	}
	if m, err := readAll(ctx, srv, 64); err != nil || string(m) != "last" {
		t.Fatalf("last message: %q, %v", m, err)
	}
	if _, _, err := srv.ReadMessage(ctx, make([]byte, 8)); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
}
