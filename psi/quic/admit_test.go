package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/psitest"
)

// deaf is a client socket that drops everything it receives, so its
// handshakes never complete.
type deaf struct {
	net.PacketConn // not the *net.UDPConn, which quic-go would read directly
	done           chan struct{}
	once           sync.Once
}

func (d *deaf) ReadFrom([]byte) (int, net.Addr, error) {
	<-d.done
	return 0, nil, net.ErrClosed
}

func (d *deaf) Close() error {
	d.once.Do(func() { close(d.done) })
	return d.PacketConn.Close()
}

// rawTLS is a quic-go client's TLS configuration for the test listeners.
func rawTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{DefaultALPN}}
}

// dialDeaf starts a handshake to addr from ip whose client never
// completes it: it reads nothing, or with retry only Retry packets, so it
// passes address validation first. It ends with ctx; wg waits for it.
func dialDeaf(t *testing.T, ctx context.Context, wg *sync.WaitGroup, ip net.IP, addr netip.AddrPort, retry bool) {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	d := &deaf{PacketConn: pc, done: make(chan struct{})}
	context.AfterFunc(ctx, func() { d.Close() })
	var c net.PacketConn = d
	if retry {
		c = retryOnly{d}
	}
	wg.Go(func() {
		quicgo.Dial(ctx, c, net.UDPAddrFromAddrPort(addr), rawTLS(), &quicgo.Config{HandshakeIdleTimeout: 20 * time.Second})
	})
}

// waitInProgress waits until l counts n handshakes in progress, for at
// most 10 s.
func waitInProgress(t *testing.T, l *Listener, n int) {
	t.Helper()
	for start := time.Now(); l.hs.inProgress() < n; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d handshakes in progress, want %d", l.hs.inProgress(), n)
		}
	}
}

// Handshakes that never complete, from one address, hold at most that
// address's quota; a client from elsewhere still connects, and clients
// beyond a few handshakes in progress go through a Retry.
func TestHandshakeQuota(t *testing.T) {
	st := &Stack{}
	l, err := st.listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	psitest.CloseAccepted(l)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 30 {
		dialDeaf(t, ctx, &wg, net.IPv4(127, 0, 0, 2), l.addr, true)
	}
	time.Sleep(300 * time.Millisecond)
	if n := l.hs.inProgress(); n > 8 {
		t.Fatalf("%d handshakes in progress from one address", n)
	}
	for range 5 {
		tr, err := st.Dial(context.Background(), l.addr, clientConfig())
		if err != nil {
			t.Fatalf("legitimate dial: %v", err)
		}
		tr.Close()
	}
	cancel()
	wg.Wait()
}

// Connections from one address that complete the handshake but never
// open their root stream hold at most a quarter of the backlog.
func TestBacklogShare(t *testing.T) {
	st := &Stack{}
	l, err := st.listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: pc}
	defer tr.Close()
	tc := rawTLS()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4) // within the address's handshake quota
	for range maxBacklog/4 + 8 {
		wg.Go(func() {
			sem <- struct{}{}
			qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(l.addr), tc, &quicgo.Config{})
			<-sem
			if err == nil {
				<-ctx.Done()
				qc.CloseWithError(0, "")
			}
		})
	}
	src := netip.MustParseAddr("127.0.0.2")
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.srcMu.Lock()
		n := l.bySrc[src]
		l.srcMu.Unlock()
		if n > maxBacklog/4 {
			t.Fatalf("%d connections of one address in the backlog", n)
		}
		if n == maxBacklog/4 || time.Now().After(deadline) {
			t.Logf("%d connections of one address in the backlog", n)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	psitest.CloseAccepted(l)
	c, err := st.Dial(ctx, l.addr, clientConfig())
	if err != nil {
		t.Fatalf("legitimate dial: %v", err)
	}
	c.Close()
	cancel()
	wg.Wait()
}

// TestHandshakeQuotaIPv6Host: the addresses of one IPv6 /64 are one
// source for the per-address quota; another /64 of the /48 still gets in.
func TestHandshakeQuotaIPv6Host(t *testing.T) {
	h := newHandshakes(128, 2, 1024)
	from := func(a string) error {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		_, err := h.connContext(ctx, &quicgo.ClientInfo{RemoteAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a), 443))})
		return err
	}
	if from("2001:db8:0:1::1") != nil || from("2001:db8:0:1::2") != nil {
		t.Fatal("the first two handshakes of a /64 refused")
	}
	if from("2001:db8:0:1::3") == nil {
		t.Fatal("a third address of the same /64 went over its quota")
	}
	if err := from("2001:db8:0:2::1"); err != nil {
		t.Fatalf("a neighbour in another /64: %v", err)
	}
}

// retryOnly is a client socket that reads only Retry packets: its
// handshakes pass address validation and then never complete.
type retryOnly struct{ *deaf }

func (r retryOnly) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := r.PacketConn.ReadFrom(b)
		if err != nil || n > 0 && b[0]&0xf0 == 0xf0 { // a QUIC v1 Retry
			return n, a, err
		}
	}
}

// TestHandshakeEviction: clients from four prefixes pass the Retry and
// never finish, holding every handshake the listener allows; a client
// from a fifth prefix still connects, ending the oldest handshake of a
// busiest prefix (before, it was refused until those timed out, as the
// FSP and TCP listeners already made room).
func TestHandshakeEviction(t *testing.T) {
	st := &Stack{MaxHandshakes: 16, MaxHandshakesPerSource: 4}
	l, err := st.listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	psitest.CloseAccepted(l)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for p := range 4 {
		for range 4 {
			dialDeaf(t, ctx, &wg, net.IPv4(127, byte(20+p), 0, 1), l.addr, true)
		}
	}
	waitInProgress(t, l, 16)
	time.Sleep(evictAge)
	for i := range 3 {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		tr, err := st.Dial(dctx, l.addr, clientConfig())
		dcancel()
		if err != nil {
			t.Fatalf("dial %d with every handshake held by four prefixes: %v", i, err)
		}
		tr.Close()
	}
}

// TestHandshakeRate: while the listener is busy, one address completing
// handshakes as fast as it can gets a quarter of its prefix's rate and is
// then refused, as from the FSP and TCP listeners (internal/hsrate); a
// client elsewhere still connects, and the address again after a pause.
// Before, the rate was unbounded.
func TestHandshakeRate(t *testing.T) {
	st := &Stack{MaxHandshakeRate: 8, MaxHandshakesPerSource: 64} // 2 a second from one address, 64 at once
	l, err := st.listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	psitest.CloseAccepted(l)
	// The rate applies to proven handshakes once the listener is busy:
	// 8 deaf clients from other addresses hold handshakes in progress.
	hctx, hcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer hcancel()
	for i := range 8 {
		dialDeaf(t, hctx, &wg, net.IPv4(127, 0, 3, byte(1+i)), l.addr, true)
	}
	waitInProgress(t, l, 8)
	// 8 in progress: 2 a second.
	psitest.HandshakeRate(t, func(from string) error {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
		if err != nil {
			return err
		}
		defer pc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		qc, err := quicgo.Dial(ctx, pc, net.UDPAddrFromAddrPort(l.addr), rawTLS(), &quicgo.Config{})
		if err == nil {
			qc.CloseWithError(0, "")
		}
		return err
	}, 24)
}

// counting is a client socket that records the sizes of what it sends
// and receives, and passes nothing up: its client never gets past its
// first Initial, as a spoofer's victim would not.
type counting struct {
	*deaf
	mu              sync.Mutex
	sent, got       int
	minSent, maxGot int
}

func (c *counting) WriteTo(b []byte, a net.Addr) (int, error) {
	c.mu.Lock()
	c.sent += len(b)
	if c.minSent == 0 || len(b) < c.minSent {
		c.minSent = len(b)
	}
	c.mu.Unlock()
	return c.deaf.PacketConn.WriteTo(b, a)
}

// TestNoAmplification: a listener answers an Initial from an address it
// has not seen prove itself with a Retry smaller than the Initial, and
// keeps nothing for it, whatever its load (before, below 8 handshakes in
// progress it sent its whole first flight, up to three times as large).
func TestNoAmplification(t *testing.T) {
	st := &Stack{}
	l, err := st.listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{deaf: &deaf{PacketConn: pc, done: make(chan struct{})}}
	defer c.Close()
	go func() {
		b := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.got += n
			c.maxGot = max(c.maxGot, n)
			c.mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	context.AfterFunc(ctx, func() { c.Close() })
	quicgo.Dial(ctx, c, net.UDPAddrFromAddrPort(l.addr), rawTLS(), &quicgo.Config{})
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("sent %d B (smallest %d), got back %d B (largest %d)", c.sent, c.minSent, c.got, c.maxGot)
	if c.got == 0 {
		t.Fatal("no Retry")
	}
	if c.maxGot > c.minSent || c.got > c.sent {
		t.Errorf("replies to unproven Initials: %d B, largest %d B, for %d B sent, smallest %d B", c.got, c.maxGot, c.sent, c.minSent)
	}
	if n := l.hs.inProgress(); n != 0 {
		t.Errorf("%d handshakes in progress for an unproven address", n)
	}
}

// retryCounter counts the Retry packets a client socket receives.
type retryCounter struct {
	net.PacketConn
	n *atomic.Int32
}

func (r retryCounter) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := r.PacketConn.ReadFrom(b)
	if err == nil && n > 0 && b[0]&0xf0 == 0xf0 {
		r.n.Add(1)
	}
	return n, a, err
}

// TestTokenSkipsRetry: a stack's first dial to a listener goes through a
// Retry; its next ones present the listener's NEW_TOKEN and do not.
func TestTokenSkipsRetry(t *testing.T) {
	srv := &Stack{}
	l, err := srv.listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	psitest.CloseAccepted(l)
	var retries atomic.Int32
	st := &Stack{PacketConn: func(netip.AddrPort) (net.PacketConn, error) {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return retryCounter{pc, &retries}, err
	}}
	var first int32
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tr, err := st.Dial(ctx, l.addr, clientConfig())
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		// The token comes with the handshake's confirmation: on the first
		// dial, wait for the listener, which closes what it accepts, to
		// have sent it. Its close may already have come, failing the
		// write with post.ErrClosed: the token came before it.
		if i == 0 {
			if err := tr.WriteMessage(ctx, []byte("x"), true, nil); err != nil && !errors.Is(err, post.ErrClosed) {
				t.Fatal(err)
			}
			for err == nil {
				_, _, err = tr.ReadMessage(ctx, make([]byte, 16))
			}
		}
		tr.Close()
		cancel()
		// A ClientHello may span two Initials, each answered by a Retry.
		got := retries.Load()
		if i == 0 {
			first = got
		}
		if got == 0 || got != first {
			t.Fatalf("dial %d: %d Retry packets so far, %d on the first dial", i, got, first)
		}
	}
}

// TestConnsPerSource: one source holds at most MaxConnsPerSource live
// connections on a listener, accepted or not; the next is refused, a
// client elsewhere still connects, and a closed connection makes room
// (before, a source's established connections were unbounded on QUIC
// while FSP's memory budget bounded them).
func TestConnsPerSource(t *testing.T) {
	l, err := (&Stack{MaxConnsPerSource: 4}).listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // the server holds what it accepts; the clients end them
		for {
			tr, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			defer psi.Abort(tr, nil)
		}
	}()
	from := func(ip net.IP) *Stack {
		return &Stack{PacketConn: func(netip.AddrPort) (net.PacketConn, error) {
			return net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
		}}
	}
	src := net.IPv4(127, 0, 0, 2)
	dial := func(st *Stack) (psi.Transient, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return st.Dial(ctx, l.addr, clientConfig())
	}
	var held []psi.Transient
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range 4 {
		c, err := dial(from(src))
		if err != nil {
			t.Fatalf("connection %d of 4: %v", i, err)
		}
		held = append(held, c)
	}
	if c, err := dial(from(src)); err == nil {
		c.Close()
		t.Fatal("a fifth connection from one source got in")
	} else if !errors.Is(err, post.ErrRefused) {
		t.Fatalf("fifth connection: %v, want ErrRefused", err)
	}
	c, err := dial(from(net.IPv4(127, 0, 0, 1)))
	if err != nil {
		t.Fatalf("a client elsewhere: %v", err)
	}
	c.Close()
	psi.Abort(held[0], nil)
	held = held[1:]
	a := netip.MustParseAddr("127.0.0.2")
	for start := time.Now(); l.hs.conns.Of(a) > 3; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d connections counted after one of 4 ended", l.hs.conns.Of(a))
		}
	}
	c, err = dial(from(src))
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	held = append(held, c)
	for _, c := range held {
		psi.Abort(c, nil)
	}
	held = nil
	for start := time.Now(); l.hs.conns.Of(a) > 0; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d connections still counted after all ended", l.hs.conns.Of(a))
		}
	}
}

// TestConnsPerSourceSuite runs the per-source bound every stack keeps
// (psitest.ConnsPerSource): 4 connections from one address, the fifth
// refused with post.ErrRefused.
func TestConnsPerSourceSuite(t *testing.T) {
	l, err := (&Stack{MaxConnsPerSource: 4}).listen(context.Background(), loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	psitest.ConnsPerSource(t, l, 4, func(ctx context.Context, from string) (psi.Transient, error) {
		cfg := clientConfig()
		cfg.Local = netip.MustParseAddrPort(from + ":0")
		return (&Stack{}).Dial(ctx, l.Addr(), cfg)
	}, func(from string) int { return l.hs.conns.Of(netip.MustParseAddr(from)) })
}
