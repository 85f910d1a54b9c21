package quic

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
)

// BenchmarkQUICTransient64KiB measures bulk transfer of 64 KiB messages on
// one stream over loopback, from the client to the listener's side. It
// reports the process's CPU time per message too (cpu-ns/op, both ends),
// steadier than ns/op on a shared machine.
func BenchmarkQUICTransient64KiB(b *testing.B) {
	var st Stack
	cli, srv, _ := pair(b, &st, serverConfig(), clientConfig())
	benchBulk(b, cli, srv)
}

// BenchmarkQUICTransient64KiBUncounted is BenchmarkQUICTransient64KiB
// with the listener's Stack.DisableSmallFrameCount set: what quic-go's
// qlog events for every packet, which the count needs, cost bulk
// transfer.
func BenchmarkQUICTransient64KiBUncounted(b *testing.B) {
	st := Stack{DisableSmallFrameCount: true}
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
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		if err := cli.WriteMessage(ctx, msg, true, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
