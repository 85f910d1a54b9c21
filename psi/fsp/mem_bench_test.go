package fsp

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
)

// Memory benchmarks. The far end of every connection runs in a child
// process (this test binary, re-run as TestMemPeer), so the heap measured
// is that of one end only:
//
//	go test -run '^$' -bench 'BenchmarkIdleConnMemory|BenchmarkHandshakeAlloc' -benchtime 1x -count 3 ./psi/fsp

// memConns is how many idle connections each memory run opens.
const memConns = 200

func heapInUse() uint64 {
	time.Sleep(100 * time.Millisecond) // the last packets handled
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkIdleConnMemory reports the heap one idle connection end holds
// ("bytes/conn"), for FSP and quic-go on three paths: "dial", a socket per
// connection (fsp.Dial, quic.DialAddr; for FSP also "stack", Stack.Dial as
// carrier.DefaultStacks dials, a transient over a socket of its own);
// "shared", every connection dialled over one Transport; and "listener",
// the accepted ends on one listener.
func BenchmarkIdleConnMemory(b *testing.B) {
	for _, stack := range []string{"fsp", "quic"} {
		for _, path := range []string{"dial", "stack", "shared", "listener"} {
			if path == "stack" && stack != "fsp" {
				continue
			}
			b.Run(stack+"-"+path, func(b *testing.B) {
				for range b.N {
					b.ReportMetric(idleConnHeap(b, stack, path), "bytes/conn")
				}
			})
		}
	}
}

// idleConnHeap opens memConns connections on path and returns the heap
// this process holds per connection.
func idleConnHeap(b *testing.B, stack, path string) float64 {
	g0 := runtime.NumGoroutine()
	p := testcert.Must()
	if path == "listener" {
		var (
			accept func() (io.Closer, error)
			addr   string
			stop   func() error
		)
		switch stack {
		case "fsp":
			l, err := Listen(loopback, memServerConfig(p))
			if err != nil {
				b.Fatal(err)
			}
			stop = l.Close
			ctx := testContext(b)
			accept = func() (io.Closer, error) { return l.Accept(ctx) }
			addr = l.Addr().String()
		case "quic":
			stls, _ := memTLS(p)
			ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
			if err != nil {
				b.Fatal(err)
			}
			stop = ln.Close
			ctx := testContext(b)
			accept = func() (io.Closer, error) {
				c, err := ln.Accept(ctx)
				if err != nil {
					return nil, err
				}
				return quicCloser{c}, nil
			}
			addr = ln.Addr().String()
		}
		// One warm-up connection, then memConns measured.
		peer := startMemPeer(b, p, stack, "dial", addr, 1)
		warm, err := accept()
		if err != nil {
			b.Fatal(err)
		}
		peer.wait(b)
		before := heapInUse()
		peer.more(b, memConns)
		conns := make([]io.Closer, 0, memConns)
		for range memConns {
			c, err := accept()
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		peer.wait(b)
		after := heapInUse()
		closeAll(append(conns, warm))
		peer.stop()
		stop()
		settle(g0)
		return float64(int64(after-before)) / memConns
	}

	peer := startMemPeer(b, p, stack, "listen", "", 0)
	defer peer.stop()
	dial, done := memDialer(b, p, stack, path, peer.addr)
	warm, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	before := heapInUse()
	conns := make([]io.Closer, 0, memConns)
	for range memConns {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	after := heapInUse()
	closeAll(append(conns, warm))
	done()
	peer.stop()
	settle(g0)
	return float64(int64(after-before)) / memConns
}

// closeAll closes conns in parallel: each Close waits for the peer.
func closeAll(conns []io.Closer) {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
}

// settle waits up to 5 s for the goroutines of closed connections to
// end, then out their time-wait, so that the next measurement does not
// see their memory freed.
func settle(goroutines int) {
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(maxTimeWait + 100*time.Millisecond)
}

type quicCloser struct{ c *quic.Conn }

func (q quicCloser) Close() error { return q.c.CloseWithError(0, "") }

// memDialer returns a function that opens one idle connection to addr.
// The second function closes the shared socket, if any.
func memDialer(b *testing.B, p *testcert.Pair, stack, path, addr string) (func() (io.Closer, error), func()) {
	ctx := testContext(b)
	ap := netip.MustParseAddrPort(addr)
	var shared net.PacketConn
	if path == "shared" {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		shared = pc
	}
	switch stack {
	case "fsp":
		cfg := memClientConfig(p)
		if path == "stack" {
			st := &Stack{}
			pcfg := &psi.Config{Security: cfg.Security, KeepAlive: -1}
			return func() (io.Closer, error) { return st.Dial(ctx, ap, pcfg) }, func() {}
		}
		if shared == nil {
			return func() (io.Closer, error) { return Dial(ctx, ap, cfg) }, func() {}
		}
		tr := &Transport{Conn: shared}
		return func() (io.Closer, error) { return tr.Dial(ctx, net.UDPAddrFromAddrPort(ap), cfg) },
			func() { tr.Close(); shared.Close() }
	default:
		_, ctls := memTLS(p)
		if shared == nil {
			return func() (io.Closer, error) {
				c, err := quic.DialAddr(ctx, addr, ctls, quicConf)
				if err != nil {
					return nil, err
				}
				return quicCloser{c}, nil
			}, func() {}
		}
		tr := &quic.Transport{Conn: shared}
		return func() (io.Closer, error) {
			c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(ap), ctls, quicConf)
			if err != nil {
				return nil, err
			}
			return quicCloser{c}, nil
		}, func() { tr.Close(); shared.Close() }
	}
}

func memServerConfig(p *testcert.Pair) *Config {
	return &Config{
		Security:  psi.Security{Certificates: []tls.Certificate{p.Leaf}},
		KeepAlive: -1,
		// Many connections from one address, as fast as they come.
		MemoryBudget:      1 << 30,
		MaxHandshakeRate:  1 << 20,
		MaxConnsPerSource: 1 << 30,
	}
}

func memClientConfig(p *testcert.Pair) *Config {
	return &Config{Security: psi.Security{RootCAs: p.Pool, ServerName: "localhost"}, KeepAlive: -1}
}

func memTLS(p *testcert.Pair) (server, client *tls.Config) {
	server = &tls.Config{Certificates: []tls.Certificate{p.Leaf}, NextProtos: []string{"bench"}}
	client = &tls.Config{RootCAs: p.Pool, ServerName: "localhost", NextProtos: []string{"bench"}}
	return server, client
}

// memPeer is the child process holding the far ends.
type memPeer struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

// startMemPeer runs TestMemPeer in a child: "listen" accepts and holds
// connections and reports its address; "dial" opens n connections to addr
// over one shared socket, then more on request.
func startMemPeer(b *testing.B, p *testcert.Pair, stack, mode, addr string, n int) *memPeer {
	b.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(p.Leaf.PrivateKey)
	if err != nil {
		b.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemPeer$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"FSP_MEM_PEER="+strings.Join([]string{stack, mode, addr, strconv.Itoa(n)}, ","),
		"FSP_MEM_CERT="+enc(p.Leaf.Certificate[0]),
		"FSP_MEM_KEY="+enc(key),
		"FSP_MEM_CA="+enc(p.CA.Raw))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	m := &memPeer{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(m.stop)
	if mode == "listen" {
		m.addr = m.line(b)
	}
	return m
}

func (m *memPeer) line(b *testing.B) string {
	b.Helper()
	for m.out.Scan() {
		if s, ok := strings.CutPrefix(m.out.Text(), "mempeer "); ok {
			if e, bad := strings.CutPrefix(s, "error "); bad {
				b.Fatal("peer: " + e)
			}
			return s
		}
	}
	b.Fatal("peer exited")
	return ""
}

// wait returns once the peer reports its connections open.
func (m *memPeer) wait(b *testing.B) { m.line(b) }

// more asks a dialling peer for n more connections.
func (m *memPeer) more(b *testing.B, n int) {
	if _, err := fmt.Fprintln(m.in, n); err != nil {
		b.Fatal(err)
	}
}

func (m *memPeer) stop() {
	if m.cmd.Process == nil || m.cmd.ProcessState != nil {
		return
	}
	m.in.Close()
	m.cmd.Wait()
}

// TestMemPeer is the child process of the memory benchmarks; it does
// nothing unless FSP_MEM_PEER is set.
func TestMemPeer(t *testing.T) {
	spec := os.Getenv("FSP_MEM_PEER")
	if spec == "" {
		t.Skip("child process of BenchmarkIdleConnMemory")
	}
	f := strings.Split(spec, ",")
	stack, mode, addr := f[0], f[1], f[2]
	n, _ := strconv.Atoi(f[3])
	fail := func(err error) {
		fmt.Printf("mempeer error %v\n", err)
		os.Exit(1)
	}
	dec := func(k string) []byte {
		v, err := base64.StdEncoding.DecodeString(os.Getenv(k))
		if err != nil {
			fail(err)
		}
		return v
	}
	leaf, err := x509.ParseCertificate(dec("FSP_MEM_CERT"))
	if err != nil {
		fail(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(dec("FSP_MEM_KEY"))
	if err != nil {
		fail(err)
	}
	ca, err := x509.ParseCertificate(dec("FSP_MEM_CA"))
	if err != nil {
		fail(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	p := &testcert.Pair{CA: ca, Pool: pool, Leaf: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}
	ctx := testContext(t)
	var conns []any
	stdin := bufio.NewScanner(os.Stdin)
	switch mode {
	case "listen":
		switch stack {
		case "fsp":
			l, err := Listen(loopback, memServerConfig(p))
			if err != nil {
				fail(err)
			}
			go func() {
				for {
					c, err := l.Accept(ctx)
					if err != nil {
						return
					}
					conns = append(conns, c)
				}
			}()
			fmt.Printf("mempeer %s\n", l.Addr())
		case "quic":
			stls, _ := memTLS(p)
			ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
			if err != nil {
				fail(err)
			}
			go func() {
				for {
					c, err := ln.Accept(ctx)
					if err != nil {
						return
					}
					conns = append(conns, c)
				}
			}()
			fmt.Printf("mempeer %s\n", ln.Addr())
		}
		for stdin.Scan() {
		}
	case "dial":
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fail(err)
		}
		ap := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))
		var dial func() (any, error)
		switch stack {
		case "fsp":
			tr := &Transport{Conn: pc}
			cfg := memClientConfig(p)
			dial = func() (any, error) { return tr.Dial(ctx, ap, cfg) }
		case "quic":
			tr := &quic.Transport{Conn: pc}
			_, ctls := memTLS(p)
			dial = func() (any, error) { return tr.Dial(ctx, ap, ctls, quicConf) }
		}
		for {
			for range n {
				c, err := dial()
				if err != nil {
					fail(err)
				}
				conns = append(conns, c)
			}
			fmt.Println("mempeer ok")
			if !stdin.Scan() {
				break
			}
			n, _ = strconv.Atoi(stdin.Text())
		}
	}
	runtime.KeepAlive(conns)
	os.Exit(0)
}

// BenchmarkHandshakeAlloc reports the bytes one end allocates per
// handshake (B/op; closing is not counted): "dial" opens a socket per
// connection as fsp.Dial and quic.DialAddr do, and "listener" accepts
// connections that the child process dials over one socket.
func BenchmarkHandshakeAlloc(b *testing.B) {
	for _, stack := range []string{"fsp", "quic"} {
		b.Run(stack+"-dial", func(b *testing.B) {
			p := testcert.Must()
			peer := startMemPeer(b, p, stack, "listen", "", 0)
			dial, _ := memDialer(b, p, stack, "dial", peer.addr)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := dial()
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				c.Close()
				b.StartTimer()
			}
		})
		b.Run(stack+"-listener", func(b *testing.B) {
			p := testcert.Must()
			var accept func() (io.Closer, error)
			var addr string
			ctx := testContext(b)
			switch stack {
			case "fsp":
				l, err := Listen(loopback, memServerConfig(p))
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				accept = func() (io.Closer, error) { return l.Accept(ctx) }
				addr = l.Addr().String()
			case "quic":
				stls, _ := memTLS(p)
				ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
				if err != nil {
					b.Fatal(err)
				}
				defer ln.Close()
				accept = func() (io.Closer, error) {
					c, err := ln.Accept(ctx)
					if err != nil {
						return nil, err
					}
					return quicCloser{c}, nil
				}
				addr = ln.Addr().String()
			}
			peer := startMemPeer(b, p, stack, "dial", addr, 1)
			warm, err := accept()
			if err != nil {
				b.Fatal(err)
			}
			defer warm.Close()
			peer.wait(b)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				peer.more(b, 1)
				c, err := accept()
				if err != nil {
					b.Fatal(err)
				}
				peer.wait(b)
				b.StopTimer()
				c.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkBurstMemory reports the heap per connection end (both ends in
// this process) that a burst of 4 MiB leaves: "bytes/conn-burst" right
// after it was read, "bytes/conn-idle" once the connections were quiet
// for compactIdle and their windows shrank.
func BenchmarkBurstMemory(b *testing.B) {
	const pairs = 8
	for range b.N {
		g0 := runtime.NumGoroutine()
		p := testcert.Must()
		l, err := Listen(loopback, memServerConfig(p))
		if err != nil {
			b.Fatal(err)
		}
		ctx := testContext(b)
		// A warm-up connection makes the listener's fixed tables.
		wc, err := Dial(ctx, addrOf(l), memClientConfig(p))
		if err != nil {
			b.Fatal(err)
		}
		ws, err := l.Accept(ctx)
		if err != nil {
			b.Fatal(err)
		}
		msg := randBytes(256 << 10)
		before := heapInUse()
		conns := []io.Closer{wc, ws}
		for range pairs {
			c, err := Dial(ctx, addrOf(l), memClientConfig(p))
			if err != nil {
				b.Fatal(err)
			}
			s, err := l.Accept(ctx)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c, s)
			for range 16 {
				if err := c.SendMessage(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			for range 16 {
				if _, err := s.ReceiveMessage(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		burst := heapInUse()
		time.Sleep(compactIdle + 500*time.Millisecond)
		idle := heapInUse()
		b.ReportMetric(float64(int64(burst-before))/(2*pairs), "bytes/conn-burst")
		b.ReportMetric(float64(int64(idle-before))/(2*pairs), "bytes/conn-idle")
		runtime.KeepAlive(msg)
		closeAll(conns)
		l.Close()
		settle(g0)
	}
}
