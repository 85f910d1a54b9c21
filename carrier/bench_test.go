package carrier_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
)

// benchPair connects two Carriers over one stack.
func benchPair(b *testing.B, stack string) (*carrier.Carrier, *carrier.Carrier) {
	b.Helper()
	return pairOn(b, stack, nil, nil)
}

// benchBulk sends size-byte messages one way; the reader reuses one
// buffer, as the raw TLS baseline does.
func benchBulk(b *testing.B, stack string, size int) {
	buf := make([]byte, size)
	benchOneWay(b, stack, size, func(ctx context.Context, s *carrier.Carrier) error {
		_, err := s.Ready(ctx, carrier.ReadyOptions{Buffer: buf})
		return err
	})
}

// benchBulkWhole is benchBulk with the reader calling Receive.
func benchBulkWhole(b *testing.B, stack string, size int) {
	benchOneWay(b, stack, size, func(ctx context.Context, s *carrier.Carrier) error {
		_, err := s.Receive(ctx)
		return err
	})
}

func benchOneWay(b *testing.B, stack string, size int, read func(context.Context, *carrier.Carrier) error) {
	c, s := benchPair(b, stack)
	ctx := context.Background()
	msg := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	done := make(chan error, 1)
	b.ResetTimer()
	go func() {
		for range b.N {
			if err := read(ctx, s); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range b.N {
		if err := c.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCarrierBulk64KiB measures one-way throughput of 64 KiB messages.
func BenchmarkCarrierBulk64KiB(b *testing.B) {
	for _, st := range benchStacks {
		b.Run(st, func(b *testing.B) { benchBulk(b, st, 64<<10) })
	}
}

// BenchmarkCarrierReceive64KiB is BenchmarkCarrierBulk64KiB with the
// reader calling Receive, a new buffer each message, on a Carrier from
// Accept: the path the Listener's receive budget counts.
func BenchmarkCarrierReceive64KiB(b *testing.B) {
	for _, st := range benchStacks {
		b.Run(st, func(b *testing.B) { benchBulkWhole(b, st, 64<<10) })
	}
}

// BenchmarkCarrierSmallMessages measures one-way 64-byte message rate.
func BenchmarkCarrierSmallMessages(b *testing.B) {
	for _, st := range benchStacks {
		b.Run(st, func(b *testing.B) {
			benchBulk(b, st, 64)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkRawTLSBulk64KiB is the baseline: the same bytes over crypto/tls
// on TCP with no framing.
func BenchmarkRawTLSBulk64KiB(b *testing.B) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{certs.Leaf}})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	size := 64 << 10
	total := int64(size) * int64(b.N)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.CopyN(io.Discard, c, total)
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: certs.Pool, ServerName: "localhost"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

var _ net.Conn = (*tls.Conn)(nil)

// BenchmarkTimeToFirstMessage measures Initiate to the peer receiving the
// first message, on a fresh Association each time, for each stack alone
// and for the race of all of them.
func BenchmarkTimeToFirstMessage(b *testing.B) {
	for _, st := range append(append([]string(nil), benchStacks...), "race") {
		b.Run(st, func(b *testing.B) {
			scfg, ccfg := serverConfig(), clientConfig()
			if st != "race" {
				ccfg.Policy.Stack(st, policy.Require)
			}
			ctx := context.Background()
			l, err := carrier.Listen(ctx, localAny, scfg)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			got := make(chan string, 1)
			go func() {
				for {
					s, err := l.Accept(ctx)
					if err != nil {
						return
					}
					go func() {
						defer s.Close()
						if _, err := s.Receive(ctx); err == nil {
							got <- s.Stack()
						}
					}()
				}
			}()
			r := l.Remote("127.0.0.1")
			b.ResetTimer()
			for range b.N {
				c, err := carrier.Initiate(ctx, r, ccfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Send(ctx, []byte("first")); err != nil {
					b.Fatal(err)
				}
				<-got
				b.StopTimer()
				c.Close()
				b.StartTimer()
			}
		})
	}
}
