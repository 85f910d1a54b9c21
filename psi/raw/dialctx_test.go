package raw_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/raw"
)

// TestTLSDialContextEnds: a raw-tls dial its context's deadline cuts
// short (the server never answers the ClientHello) wraps post.ErrTimeout
// and context.DeadlineExceeded, and one its caller cancels wraps
// context.Canceled and no ErrTimeout, as on every stack
// (docs/design.md, Contexts). It wrapped ErrTimeout alone in both cases.
func TestTLSDialContextEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	cfg := &psi.Config{Security: psi.Security{InsecureSkipVerify: true}}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = (&raw.TLS{}).Dial(ctx, addr, cfg)
	cancel()
	if !errors.Is(err, post.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v, want ErrTimeout and context.DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err = (&raw.TLS{}).Dial(ctx, addr, cfg)
	if !errors.Is(err, context.Canceled) || errors.Is(err, post.ErrTimeout) {
		t.Errorf("cancel: %v, want context.Canceled and no ErrTimeout", err)
	}
}
