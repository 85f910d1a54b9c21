package tcp_test

import (
	"context"
	"crypto/tls"
	"io"
	"testing"

	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/tcp"
)

const bulkSize = 64 << 10

// BenchmarkTransient64KiB sends 64 KiB messages one way over loopback.
func BenchmarkTransient64KiB(b *testing.B) {
	c, sv := pair(b)
	msg := make([]byte, bulkSize)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, bulkSize)
		for {
			_, _, err := sv.ReadMessage(context.Background(), buf)
			if err != nil {
				done <- err
				return
			}
		}
	}()
	ctx := context.Background()
	b.SetBytes(bulkSize)
	b.ResetTimer()
	for range b.N {
		if err := c.WriteMessage(ctx, msg, true, nil); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != io.EOF {
		b.Fatal(err)
	}
}

// BenchmarkRawTLS64KiB sends the same bytes over a plain crypto/tls
// connection, with no framing, as a baseline for BenchmarkTransient64KiB.
func BenchmarkRawTLS64KiB(b *testing.B) {
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{certs.Leaf}, MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		buf := make([]byte, bulkSize)
		for {
			if _, err := s.Read(buf); err != nil {
				done <- err
				return
			}
		}
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: certs.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, bulkSize)
	b.SetBytes(bulkSize)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != io.EOF {
		b.Fatal(err)
	}
}

// BenchmarkTransientSmallMessages sends 64-byte messages, each flushed.
func BenchmarkTransientSmallMessages(b *testing.B) {
	c, sv := pair(b)
	msg := make([]byte, 64)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<10)
		for {
			if _, _, err := sv.ReadMessage(context.Background(), buf); err != nil {
				done <- err
				return
			}
		}
	}()
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if err := c.WriteMessage(ctx, msg, true, nil); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != io.EOF {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkDial measures connection set-up: TCP, TLS 1.3 and the hello.
func BenchmarkDial(b *testing.B) {
	var s tcp.Stack
	ln := listen(b, s, serverConfig())
	ctx := context.Background()
	go func() {
		for {
			t, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			t.Close()
		}
	}()
	for b.Loop() {
		c, err := s.Dial(ctx, ln.Addr(), clientConfig())
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkFork measures forking an open transient (TLS resumption).
func BenchmarkFork(b *testing.B) {
	var s tcp.Stack
	ln := listen(b, s, serverConfig())
	c, sv := connect(b, s, ln, clientConfig())
	ctx := context.Background()
	go func() {
		for {
			f, err := sv.AcceptFork(ctx)
			if err != nil {
				return
			}
			f.Close()
		}
	}()
	for b.Loop() {
		f, err := c.Fork(ctx, psi.Wine)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
