package fsp

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"runtime"
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

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkIdleConnMemory opens idle connections from one client socket
// to one listener and reports the heap they hold per connection end
// (both ends live in this process, so the total is divided by 2N).
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 200
	b.Run("fsp", func(b *testing.B) {
		scfg, ccfg := pair(b)
		ccfg.KeepAlive = -1
		scfg.KeepAlive = -1
		scfg.MemoryBudget = 1 << 30 // n connections from one address
		for range b.N {
			l := listen(b, scfg)
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			tr := &Transport{Conn: pc}
			ctx := testContext(b)
			// Warm up pools and the transports.
			warm, err := tr.Dial(ctx, l.Addr(), ccfg)
			if err != nil {
				b.Fatal(err)
			}
			ws, _ := l.Accept(ctx)
			warm.SendMessage(ctx, []byte("x"))
			ws.ReceiveMessage(ctx)
			before := heapInUse()
			conns := make([]*Conn, 0, 2*n)
			for range n {
				c, err := tr.Dial(ctx, l.Addr(), ccfg)
				if err != nil {
					b.Fatal(err)
				}
				s, err := l.Accept(ctx)
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c, s)
			}
			after := heapInUse()
			b.ReportMetric(float64(after-before)/(2*n), "bytes/conn")
			runtime.KeepAlive(conns)
			for _, c := range conns {
				c.Close()
			}
			tr.Close()
			pc.Close()
			l.Close()
		}
	})
	b.Run("quic", func(b *testing.B) {
		stls, ctls := quicConfigs(b)
		for range b.N {
			ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
			if err != nil {
				b.Fatal(err)
			}
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			tr := &quic.Transport{Conn: pc}
			ctx := testContext(b)
			raddr := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ln.Addr().String()))
			warm, err := tr.Dial(ctx, raddr, ctls, quicConf)
			if err != nil {
				b.Fatal(err)
			}
			ws, _ := ln.Accept(ctx)
			before := heapInUse()
			var conns []*quic.Conn
			for range n {
				c, err := tr.Dial(ctx, raddr, ctls, quicConf)
				if err != nil {
					b.Fatal(err)
				}
				s, err := ln.Accept(ctx)
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c, s)
			}
			after := heapInUse()
			b.ReportMetric(float64(after-before)/(2*n), "bytes/conn")
			for _, c := range append(conns, warm, ws) {
				c.CloseWithError(0, "")
			}
			tr.Close()
			ln.Close()
		}
	})
}
