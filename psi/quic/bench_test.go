package quic

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
)

// BenchmarkQUICTransient64KiB measures bulk transfer of 64 KiB messages on
// one stream over loopback.
func BenchmarkQUICTransient64KiB(b *testing.B) {
	var st Stack
	cli, srv, _ := pair(b, &st, serverConfig(), clientConfig())
	benchBulk(b, cli, srv)
}

// benchBulk sends b.N 64 KiB messages from cli to srv.
func benchBulk(b *testing.B, cli, srv psi.Transient) {
	ctx := context.Background()
	msg := pattern(64<<10, 0)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for i := 0; i < b.N; {
			_, end, err := srv.ReadMessage(ctx, buf)
			if err != nil {
				done <- err
				return
			}
			if end {
				i++
			}
		}
		done <- nil
	}()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for range b.N {
		if err := cli.WriteMessage(ctx, msg, true, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkQUICRoundTrip measures a 64-byte request and reply.
func BenchmarkQUICRoundTrip(b *testing.B) {
	var st Stack
	cli, srv, _ := pair(b, &st, serverConfig(), clientConfig())
	benchRoundTrip(b, cli, srv, nil)
}

// BenchmarkQUICDatagramRoundTrip measures a 64-byte request and reply sent
// as unreliable datagrams.
func BenchmarkQUICDatagramRoundTrip(b *testing.B) {
	var st Stack
	cli, srv, _ := pair(b, &st, serverConfig(), clientConfig())
	benchRoundTrip(b, cli, srv, unreliableOpts)
}

func benchRoundTrip(b *testing.B, cli, srv psi.Transient, opts *psi.WriteOptions) {
	ctx := context.Background()
	go func() {
		buf := make([]byte, 256)
		for {
			n, _, err := srv.ReadMessage(ctx, buf)
			if err != nil {
				return
			}
			if srv.WriteMessage(ctx, buf[:n], true, opts) != nil {
				return
			}
		}
	}()
	msg := pattern(64, 0)
	buf := make([]byte, 256)
	b.ResetTimer()
	for range b.N {
		for {
			if err := cli.WriteMessage(ctx, msg, true, opts); err != nil {
				b.Fatal(err)
			}
			rctx, cancel := ctx, context.CancelFunc(func() {})
			if opts != nil {
				// A lost datagram is sent again.
				rctx, cancel = context.WithTimeout(ctx, time.Second)
			}
			_, _, err := cli.ReadMessage(rctx, buf)
			cancel()
			if err == nil {
				break
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				b.Fatal(err)
			}
		}
	}
}
