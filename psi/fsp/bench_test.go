package fsp

import (
	"crypto/tls"
	"io"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/testcert"
)

// The benchmarks compare FSP with quic-go and TLS over TCP on loopback:
//
//	go test -run XXX -bench . -benchtime 2s ./psi/fsp

const bulkMessage = 64 << 10

func quicConfigs(tb testing.TB) (server, client *tls.Config) {
	p := testcert.Must()
	server = &tls.Config{Certificates: []tls.Certificate{p.Leaf}, NextProtos: []string{"bench"}}
	client = &tls.Config{RootCAs: p.Pool, ServerName: "localhost", NextProtos: []string{"bench"}}
	return server, client
}

var quicConf = &quic.Config{MaxIdleTimeout: 60e9}

func BenchmarkBulk(b *testing.B) {
	b.Run("fsp", func(b *testing.B) {
		scfg, ccfg := pair(b)
		l := listen(b, scfg)
		c, s := connect(b, l, ccfg)
		ctx := testContext(b)
		msg := randBytes(bulkMessage)
		done := make(chan error, 1)
		b.SetBytes(bulkMessage)
		b.ResetTimer()
		go func() {
			buf := make([]byte, bulkMessage)
			for got := 0; got < b.N; {
				_, end, err := s.ReadMessage(ctx, buf)
				if err != nil {
					done <- err
					return
				}
				if end {
					got++
				}
			}
			done <- nil
		}()
		for range b.N {
			if err := c.SendMessage(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
	b.Run("quic", func(b *testing.B) {
		stls, ctls := quicConfigs(b)
		ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		ctx := testContext(b)
		done := make(chan error, 1)
		total := int64(b.N) * bulkMessage
		go func() {
			c, err := ln.Accept(ctx)
			if err != nil {
				done <- err
				return
			}
			st, err := c.AcceptStream(ctx)
			if err != nil {
				done <- err
				return
			}
			_, err = io.CopyN(io.Discard, st, total)
			done <- err
		}()
		c, err := quic.DialAddr(ctx, ln.Addr().String(), ctls, quicConf)
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseWithError(0, "")
		st, err := c.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		msg := randBytes(bulkMessage)
		b.SetBytes(bulkMessage)
		b.ResetTimer()
		for range b.N {
			if _, err := st.Write(msg); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
	b.Run("tls-tcp", func(b *testing.B) {
		stls, ctls := quicConfigs(b)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", stls)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		done := make(chan error, 1)
		total := int64(b.N) * bulkMessage
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
		c, err := tls.Dial("tcp", ln.Addr().String(), ctls)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		msg := randBytes(bulkMessage)
		b.SetBytes(bulkMessage)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkHandshakeFirstMessage(b *testing.B) {
	b.Run("fsp", func(b *testing.B) {
		scfg, ccfg := pair(b)
		l := listen(b, scfg)
		ctx := testContext(b)
		got := make(chan error, 1)
		go func() {
			for {
				s, err := l.Accept(ctx)
				if err != nil {
					return
				}
				go func() {
					_, err := s.ReceiveMessage(ctx)
					got <- err
					s.Close()
				}()
			}
		}()
		addr := addrOf(l)
		b.ResetTimer()
		for range b.N {
			c, err := Dial(ctx, addr, ccfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.SendMessage(ctx, []byte("hello")); err != nil {
				b.Fatal(err)
			}
			if err := <-got; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			c.Close()
			b.StartTimer()
		}
	})
	b.Run("quic", func(b *testing.B) {
		stls, ctls := quicConfigs(b)
		ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		ctx := testContext(b)
		got := make(chan error, 1)
		go func() {
			for {
				c, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				go func() {
					st, err := c.AcceptStream(ctx)
					if err == nil {
						_, err = io.ReadAll(st)
					}
					got <- err
					c.CloseWithError(0, "")
				}()
			}
		}()
		b.ResetTimer()
		for range b.N {
			c, err := quic.DialAddr(ctx, ln.Addr().String(), ctls, quicConf)
			if err != nil {
				b.Fatal(err)
			}
			st, err := c.OpenStream()
			if err != nil {
				b.Fatal(err)
			}
			st.Write([]byte("hello"))
			st.Close()
			if err := <-got; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			c.CloseWithError(0, "")
			b.StartTimer()
		}
	})
}

func BenchmarkRoundTrip(b *testing.B) {
	const size = 64
	b.Run("fsp", func(b *testing.B) {
		scfg, ccfg := pair(b)
		l := listen(b, scfg)
		c, s := connect(b, l, ccfg)
		ctx := testContext(b)
		go func() {
			buf := make([]byte, size)
			for {
				n, _, err := s.ReadMessage(ctx, buf)
				if err != nil || s.SendMessage(ctx, buf[:n]) != nil {
					return
				}
			}
		}()
		msg, buf := randBytes(size), make([]byte, size)
		b.ResetTimer()
		for range b.N {
			if err := c.SendMessage(ctx, msg); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.ReadMessage(ctx, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("quic", func(b *testing.B) {
		stls, ctls := quicConfigs(b)
		ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		ctx := testContext(b)
		go func() {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			st, err := c.AcceptStream(ctx)
			if err != nil {
				return
			}
			buf := make([]byte, size)
			for {
				if _, err := io.ReadFull(st, buf); err != nil {
					return
				}
				if _, err := st.Write(buf); err != nil {
					return
				}
			}
		}()
		c, err := quic.DialAddr(ctx, ln.Addr().String(), ctls, quicConf)
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseWithError(0, "")
		st, err := c.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		msg, buf := randBytes(size), make([]byte, size)
		b.ResetTimer()
		for range b.N {
			st.Write(msg)
			if _, err := io.ReadFull(st, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
