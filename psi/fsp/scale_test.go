//go:build unix

package fsp

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Server scale: one listener, n clients that each handshake, send one
// message and read a one-message answer. BenchmarkServerScale runs the
// listener in a child process (this test binary again, see
// TestScaleServerChild) so that its GOMAXPROCS and its CPU time are its
// own; the clients run in the benchmark's process:
//
//	go test -run '^$' -bench ServerScale -benchtime 1x ./psi/fsp
//
// The listener answers nobody until all n messages arrived, so all n
// connections are open at once when it measures its heap.

// scaleTransports is how many client sockets the n clients share:
// FSP_SCALE_SOCKETS, or 50.
func scaleTransports() int {
	if n, err := strconv.Atoi(os.Getenv("FSP_SCALE_SOCKETS")); err == nil && n > 0 {
		return n
	}
	return 50
}

// scaleServerConfig lifts the listener's per-source quotas: every client
// comes from 127.0.0.1, where the defaults (25 handshakes a second, a
// quarter of a 256 MiB budget and 1,024 connections per address)
// protect a public listener. It waits for a client's confirmation as long
// as the clients wait for the handshake (scaleClientConfig): a client too
// busy to read the answer for the default 10 s would find its connection
// given up.
func scaleServerConfig(leaf tls.Certificate) *Config {
	return &Config{
		Security:             psi.Security{Certificates: []tls.Certificate{leaf}},
		HandshakeTimeout:     time.Minute,
		MemoryBudget:         1 << 40, // an accounting limit: allocates nothing
		MaxHandshakeRate:     1 << 30,
		MaxPending:           1 << 20,
		MaxPendingPerAddress: 1 << 20,
		MaxPendingPerPrefix:  1 << 20,
		MaxConnsPerSource:    1 << 30,
	}
}

// scaleClientConfig gives a dial all of a long burst, within its
// context's deadline, to get through.
func scaleClientConfig(pool *x509.CertPool) *Config {
	return &Config{
		Security:         psi.Security{RootCAs: pool, ServerName: "localhost"},
		HandshakeTimeout: time.Minute,
		Linger:           time.Minute,
	}
}

// scaleResult is what the child listener reports.
type scaleResult struct {
	Handshakes  int     // connections accepted
	AcceptSecs  float64 // from the start to the last Accept
	Accept90    float64 // from the start to the Accept of 90% of n
	WallSecs    float64 // from the start to the last message
	CPUSecs     float64 // user+system CPU time over WallSecs
	HeapPerConn float64 // heap bytes per open connection: all n open, less after they closed
	Err         string
}

// TestScaleServerChild is the listener of BenchmarkServerScale when run
// with FSP_SCALE_SERVER set to fsp or quic and FSP_SCALE_N to the number
// of clients (FSP_SCALE_CPUPROFILE names a file for its CPU profile). It writes "scale ca <DER>" and "scale addr <address>",
// starts on a line on its standard input, and writes "scale result <JSON>".
func TestScaleServerChild(t *testing.T) {
	stack := os.Getenv("FSP_SCALE_SERVER")
	if stack == "" {
		t.Skip("the listener of BenchmarkServerScale")
	}
	n, err := strconv.Atoi(os.Getenv("FSP_SCALE_N"))
	if err != nil {
		t.Fatal(err)
	}
	p := testcert.Must()
	fmt.Printf("scale ca %s\n", base64.StdEncoding.EncodeToString(p.CA.Raw))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var srv scaleServer
	switch stack {
	case "fsp":
		srv, err = newFSPScaleServer(p.Leaf)
	case "quic":
		srv, err = newQUICScaleServer(p.Leaf)
	default:
		err = fmt.Errorf("unknown stack %q", stack)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	fmt.Printf("scale addr %s\n", srv.addr())
	if path := os.Getenv("FSP_SCALE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	res := runScaleServer(ctx, srv, n, os.Stdin)
	b, _ := json.Marshal(res)
	fmt.Printf("scale result %s\n", b)
}

// scaleServer is one stack's listener.
type scaleServer interface {
	addr() string
	// accept returns the next connection's exchange: read one message,
	// then, on answer, answer it and wait for the client to close.
	accept(ctx context.Context) (scaleConn, error)
	close()
}

type scaleConn interface {
	read(ctx context.Context) error
	answer(ctx context.Context) error
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runScaleServer waits for a line on control, then serves n clients; a
// second line (or the end of control) says the clients are done, so it
// stops waiting for those that failed.
func runScaleServer(ctx context.Context, srv scaleServer, n int, control io.Reader) scaleResult {
	r := bufio.NewReader(control)
	r.ReadString('\n')
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		r.ReadString('\n')
		cancel()
	}()
	t0, cpu0 := time.Now(), cpuTime()
	var (
		res      scaleResult
		mu       sync.Mutex // guards the rest
		firstErr error
		accepted int
		read     int
		lastAcc  = t0 // time of the last Accept
		lastRead = t0 // time and CPU time of the last message
		lastCPU  = cpu0
		all      = make(chan struct{}) // n messages read
		release  = make(chan struct{}) // answer them
		answered sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	acceptCtx, stopAccept := context.WithCancel(ctx)
	defer stopAccept()
	go func() {
		for i := range n {
			c, err := srv.accept(acceptCtx)
			if err != nil {
				fail(fmt.Errorf("accept %d: %w", i, err))
				return
			}
			now := time.Now()
			mu.Lock()
			accepted, lastAcc = accepted+1, now
			if accepted == n*9/10 {
				res.Accept90 = now.Sub(t0).Seconds()
			}
			mu.Unlock()
			answered.Add(1)
			go func() {
				defer answered.Done()
				if err := c.read(ctx); err != nil {
					fail(err)
					return
				}
				now, cpu := time.Now(), cpuTime()
				mu.Lock()
				read++
				lastRead, lastCPU = now, cpu
				if read == n {
					close(all)
				}
				mu.Unlock()
				select {
				case <-release:
				case <-ctx.Done():
					return
				}
				if err := c.answer(ctx); err != nil {
					fail(err)
				}
			}()
		}
	}()
	// All n messages, or nothing new for scaleQuiet: some clients were
	// refused, and the others wait for their answers.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-all:
			break wait
		case <-ctx.Done():
			fail(ctx.Err())
			break wait
		case now := <-tick.C:
			mu.Lock()
			quiet := now.Sub(lastAcc) > scaleQuiet && now.Sub(lastRead) > scaleQuiet
			mu.Unlock()
			if quiet {
				fail(fmt.Errorf("nothing new for %v", scaleQuiet))
				break wait
			}
		}
	}
	stopAccept()
	mu.Lock()
	res.Handshakes = accepted
	res.AcceptSecs = lastAcc.Sub(t0).Seconds()
	res.WallSecs = lastRead.Sub(t0).Seconds()
	res.CPUSecs = (lastCPU - cpu0).Seconds()
	mu.Unlock()
	open := heapInUse()
	close(release)
	answered.Wait()
	// The baseline is taken once every connection closed (time-wait
	// included), so the pools the run warmed count on both sides.
	time.Sleep(2 * time.Second)
	if res.Handshakes > 0 {
		res.HeapPerConn = (float64(open) - float64(heapInUse())) / float64(res.Handshakes)
	}
	if firstErr != nil {
		res.Err = firstErr.Error()
	}
	return res
}

// scaleQuiet is how long the listener waits for a new connection or
// message before it answers those it has. It only ends a run in which
// clients were lost, so it is generous: on a loaded host a client whose
// first message was dropped may resend it seconds later (its first RTT
// sample, the handshake's, includes the listener's queue of key
// exchanges: 8.5 s after Accept was seen at load 10).
const scaleQuiet = 30 * time.Second

type fspScaleServer struct{ l *Listener }

func newFSPScaleServer(leaf tls.Certificate) (scaleServer, error) {
	l, err := Listen(loopback, scaleServerConfig(leaf))
	return fspScaleServer{l}, err
}

func (s fspScaleServer) addr() string { return s.l.Addr().String() }
func (s fspScaleServer) close()       { s.l.Close() }
func (s fspScaleServer) accept(ctx context.Context) (scaleConn, error) {
	c, err := s.l.Accept(ctx)
	return fspScaleConn{c}, err
}

type fspScaleConn struct{ c *Conn }

func (c fspScaleConn) read(ctx context.Context) error {
	_, err := c.c.ReceiveMessage(ctx)
	return err
}

func (c fspScaleConn) answer(ctx context.Context) error {
	defer c.c.Close()
	if err := c.c.SendMessage(ctx, []byte("ok")); err != nil {
		return err
	}
	// The client got its answer; how it closes is not measured (on a
	// starved machine its Close may run out of Linger and reset, its
	// RELEASE, dropped in the burst of closes and resent on a timeout
	// grown from a handshake of seconds, may come after this end's idle
	// timeout, or the clients may all be done, ending ctx, before this
	// end has read the close; a client that failed reports it itself).
	_, err := c.c.ReceiveMessage(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, post.ErrReset) && !errors.Is(err, post.ErrTimeout) {
		return fmt.Errorf("after the answer: %v", err)
	}
	return nil
}

// scaleTLS returns quic-go's configurations with FSP's key exchange,
// X25519 alone, so both stacks do the same public-key work.
func scaleTLS(leaf tls.Certificate, pool *x509.CertPool) (server, client *tls.Config) {
	server = &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"bench"}, CurvePreferences: []tls.CurveID{tls.X25519}}
	client = &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"bench"}, CurvePreferences: []tls.CurveID{tls.X25519}}
	return server, client
}

type quicScaleServer struct{ ln *quic.Listener }

func newQUICScaleServer(leaf tls.Certificate) (scaleServer, error) {
	stls, _ := scaleTLS(leaf, nil)
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, &quic.Config{MaxIdleTimeout: time.Minute, HandshakeIdleTimeout: time.Minute})
	return quicScaleServer{ln}, err
}

func (s quicScaleServer) addr() string { return s.ln.Addr().String() }
func (s quicScaleServer) close()       { s.ln.Close() }
func (s quicScaleServer) accept(ctx context.Context) (scaleConn, error) {
	c, err := s.ln.Accept(ctx)
	return &quicScaleConn{c: c}, err
}

type quicScaleConn struct {
	c  *quic.Conn
	st *quic.Stream
}

func (c *quicScaleConn) read(ctx context.Context) error {
	st, err := c.c.AcceptStream(ctx)
	if err != nil {
		return err
	}
	c.st = st
	_, err = io.ReadAll(st)
	return err
}

func (c *quicScaleConn) answer(ctx context.Context) error {
	c.st.Write([]byte("ok"))
	c.st.Close()
	select {
	case <-c.c.Context().Done(): // the client read it and closed
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// scaleDialer runs one client: dial, send one message, read the answer,
// close.
type scaleDialer func(ctx context.Context, i int) error

// runScaleClients starts n clients at once and returns how many failed
// and the first error.
func runScaleClients(ctx context.Context, n int, dial scaleDialer) (int, error) {
	var (
		wg       sync.WaitGroup
		failed   atomic.Int64
		once     sync.Once
		firstErr error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := dial(ctx, i); err != nil {
				failed.Add(1)
				once.Do(func() { firstErr = fmt.Errorf("client %d: %w", i, err) })
			}
		}()
	}
	wg.Wait()
	return int(failed.Load()), firstErr
}

// fspScaleClients dials over scaleTransports shared client sockets.
func fspScaleClients(tb testing.TB, addr netip.AddrPort, cfg *Config) (scaleDialer, func()) {
	trs := make([]*Transport, scaleTransports())
	for i := range trs {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		trs[i] = &Transport{Conn: pc}
	}
	raddr := net.UDPAddrFromAddrPort(addr)
	dial := func(ctx context.Context, i int) error {
		c, err := trs[i%len(trs)].Dial(ctx, raddr, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SendMessage(ctx, []byte("hello")); err != nil {
			return err
		}
		if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "ok" {
			return fmt.Errorf("answer %q: %v", m, err)
		}
		return nil
	}
	return dial, func() {
		for _, t := range trs {
			t.Close()
			t.Conn.Close()
		}
	}
}

func quicScaleClients(tb testing.TB, addr netip.AddrPort, ctls *tls.Config) (scaleDialer, func()) {
	trs := make([]*quic.Transport, scaleTransports())
	for i := range trs {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		trs[i] = &quic.Transport{Conn: pc}
	}
	raddr := net.UDPAddrFromAddrPort(addr)
	qc := &quic.Config{MaxIdleTimeout: time.Minute, HandshakeIdleTimeout: time.Minute}
	dial := func(ctx context.Context, i int) error {
		c, err := trs[i%len(trs)].Dial(ctx, raddr, ctls, qc)
		if err != nil {
			return err
		}
		defer c.CloseWithError(0, "")
		st, err := c.OpenStream()
		if err != nil {
			return err
		}
		st.Write([]byte("hello"))
		st.Close()
		if m, err := io.ReadAll(st); err != nil || string(m) != "ok" {
			return fmt.Errorf("answer %q: %v", m, err)
		}
		return nil
	}
	return dial, func() {
		for _, t := range trs {
			t.Close()
			t.Conn.Close()
		}
	}
}

// startScaleServer starts the child listener and returns its address,
// the pool that trusts it, and a function that starts it and returns its
// result once clientsDone is closed and it served what it could.
func startScaleServer(tb testing.TB, stack string, n, procs int) (netip.AddrPort, *x509.CertPool, func(clientsDone <-chan struct{}) scaleResult) {
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestScaleServerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FSP_SCALE_SERVER="+stack, "FSP_SCALE_N="+strconv.Itoa(n), "GOMAXPROCS="+strconv.Itoa(procs))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// Let it exit by itself (and write its profile), then kill it.
		stdin.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 1<<20)
	next := func(key string) string {
		for lines.Scan() {
			if v, ok := strings.CutPrefix(lines.Text(), "scale "+key+" "); ok {
				return v
			}
		}
		tb.Fatalf("scale server: no %q line: %v", key, lines.Err())
		return ""
	}
	der, err := base64.StdEncoding.DecodeString(next("ca"))
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	addr, err := netip.ParseAddrPort(next("addr"))
	if err != nil {
		tb.Fatal(err)
	}
	run := func(clientsDone <-chan struct{}) scaleResult {
		io.WriteString(stdin, "go\n")
		go func() {
			<-clientsDone
			io.WriteString(stdin, "stop\n")
		}()
		var res scaleResult
		if err := json.Unmarshal([]byte(next("result")), &res); err != nil {
			tb.Fatal(err)
		}
		go io.Copy(io.Discard, stdout)
		return res
	}
	return addr, pool, run
}

// BenchmarkServerScale reports, for each stack, the listener's
// handshakes per second (n over the time to the last Accept; and 90% of
// n over the time to that Accept, without the stragglers), its heap
// per connection with all n open, its CPU time over wall time, and the
// clients that failed (any error: dial, send or the answer), and the
// listener's CPU time per connection (handshake and first message),
// which the machine's load moves least.
func BenchmarkServerScale(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		for _, procs := range []int{1, 2} {
			for _, stack := range []string{"fsp", "quic"} {
				b.Run(fmt.Sprintf("%s/clients=%d/procs=%d", stack, n, procs), func(b *testing.B) {
					var rate, rate90, heap, cpu, cpuPer, failed float64
					for range b.N {
						r, f := scaleRound(b, stack, n, procs)
						rate += float64(r.Handshakes) / r.AcceptSecs
						if r.Accept90 > 0 {
							rate90 += float64(n*9/10) / r.Accept90
						}
						heap += r.HeapPerConn
						cpu += r.CPUSecs / r.WallSecs
						if r.Handshakes > 0 {
							cpuPer += r.CPUSecs * 1e6 / float64(r.Handshakes)
						}
						failed += float64(f)
					}
					k := float64(b.N)
					b.ReportMetric(rate/k, "handshakes/s")
					b.ReportMetric(rate90/k, "first90%-handshakes/s")
					b.ReportMetric(heap/k, "heap-B/conn")
					b.ReportMetric(cpu/k, "cpu/wall")
					b.ReportMetric(cpuPer/k, "cpu-µs/conn")
					b.ReportMetric(failed/k, "failures")
					b.ReportMetric(0, "ns/op")
				})
			}
		}
	}
}

// scaleRound runs one listener and n clients; it returns the listener's
// figures and the number of clients that failed.
func scaleRound(tb testing.TB, stack string, n, procs int) (scaleResult, int) {
	addr, pool, run := startScaleServer(tb, stack, n, procs)
	var (
		dial scaleDialer
		stop func()
	)
	if stack == "fsp" {
		dial, stop = fspScaleClients(tb, addr, scaleClientConfig(pool))
	} else {
		_, ctls := scaleTLS(tls.Certificate{}, pool)
		dial, stop = quicScaleClients(tb, addr, ctls)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resc := make(chan scaleResult, 1)
	clientsDone := make(chan struct{})
	go func() { resc <- run(clientsDone) }()
	failed, err := runScaleClients(ctx, n, dial)
	close(clientsDone)
	res := <-resc
	if err != nil {
		tb.Logf("%s: %d of %d clients failed, first: %v", stack, failed, n, err)
	}
	if res.Err != "" {
		tb.Logf("%s listener: %s", stack, res.Err)
	}
	if res.Handshakes < n {
		failed = max(failed, n-res.Handshakes)
	}
	return res, failed
}

// TestManyDials: 5,000 clients (625 under the race detector) dial one
// listener at once, each sends a message and reads the answer; every one
// succeeds. The listener answers nobody until all messages arrived, so
// all the connections are open together, and it runs in a child process
// at GOMAXPROCS=1 and at 2: a busy listener slows handshakes down but
// loses none.
func TestManyDials(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 handshakes")
	}
	if os.Getenv("FSP_SCALE_SERVER") != "" {
		t.Skip("in the child listener")
	}
	// 5,000, or fewer in a slower build (attack.Paced): under the race
	// detector every handshake costs 5 to 20 times the CPU on both sides.
	n := attack.Paced(5000)
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			res, failed := scaleRound(t, "fsp", n, procs)
			t.Logf("%d handshakes in %.2f s (%.0f/s), listener CPU/wall %.2f, %.0f heap bytes per connection",
				res.Handshakes, res.AcceptSecs, float64(res.Handshakes)/res.AcceptSecs, res.CPUSecs/res.WallSecs, res.HeapPerConn)
			if failed > 0 || res.Err != "" {
				t.Fatalf("%d of %d clients failed; listener: %q", failed, n, res.Err)
			}
		})
	}
}
