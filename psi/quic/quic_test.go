package quic

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

var certs = testcert.Must()

var unreliableOpts = &psi.WriteOptions{Properties: &post.Properties{Lifetime: time.Second, Unreliable: true}}

func serverConfig() *psi.Config {
	return &psi.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}}
}

func clientConfig() *psi.Config {
	return &psi.Config{Security: psi.Security{RootCAs: certs.Pool, ServerName: "localhost"}}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pair listens, dials and accepts, returning client and server roots.
func pair(t testing.TB, st *Stack, scfg, ccfg *psi.Config) (cli, srv *Transient, l psi.Listener) {
	t.Helper()
	ctx := testContext(t)
	l, err := st.Listen(ctx, loopback, scfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	c, err := st.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	// The server learns of the root stream once bytes arrive on it; the
	// header is sent at open, so Accept does not need a message.
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return c.(*Transient), s.(*Transient), l
}

// readAll reads one whole message using reads of at most bufSize bytes.
func readAll(ctx context.Context, tr psi.Transient, bufSize int) ([]byte, error) {
	var msg []byte
	buf := make([]byte, bufSize)
	for {
		n, end, err := tr.ReadMessage(ctx, buf)
		msg = append(msg, buf[:n]...)
		if err != nil {
			return msg, err
		}
		if end {
			if msg == nil {
				msg = []byte{}
			}
			return msg, nil
		}
	}
}

func send(t testing.TB, ctx context.Context, tr psi.Transient, msg []byte, opts *psi.WriteOptions) {
	t.Helper()
	if err := tr.WriteMessage(ctx, msg, true, opts); err != nil {
		t.Fatalf("WriteMessage: %v", err)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func TestStackInfo(t *testing.T) {
	var st Stack
	if st.Name() != "quic" {
		t.Errorf("Name = %q", st.Name())
	}
	want := psi.Reliable | psi.Ordered | psi.Fork | psi.ZeroRTT | psi.Datagrams | psi.Encrypted
	if st.Features() != want {
		t.Errorf("Features = %v, want %v", st.Features(), want)
	}
}

func TestMessageSizes(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	sizes := []int{0, 1, 64 << 10, 5 << 20}
	if testing.Short() {
		sizes = sizes[:3]
	}
	for _, size := range sizes {
		for _, dir := range []struct {
			name     string
			from, to psi.Transient
		}{{"c2s", cli, srv}, {"s2c", srv, cli}} {
			msg := pattern(size, byte(size))
			errc := make(chan error, 1)
			go func() { errc <- dir.from.WriteMessage(ctx, msg, true, nil) }()
			got, err := readAll(ctx, dir.to, 32<<10)
			if err != nil {
				t.Fatalf("%s %d B: read: %v", dir.name, size, err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("%s %d B: write: %v", dir.name, size, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("%s %d B: got %d bytes, content differs", dir.name, size, len(got))
			}
		}
	}
}

func TestPartialMessages(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	parts := []string{"hello, ", "", "partial ", "world"}
	for i, p := range parts {
		if err := cli.WriteMessage(ctx, []byte(p), i == len(parts)-1, nil); err != nil {
			t.Fatal(err)
		}
	}
	send(t, ctx, cli, []byte("second"), nil)
	// Read with a tiny buffer: parts come back without crossing the end.
	got, err := readAll(ctx, srv, 3)
	if err != nil || string(got) != "hello, partial world" {
		t.Fatalf("first message = %q, %v", got, err)
	}
	got, err = readAll(ctx, srv, 3)
	if err != nil || string(got) != "second" {
		t.Fatalf("second message = %q, %v", got, err)
	}
	// The first part of a message can be read before the rest is written.
	if err := srv.WriteMessage(ctx, []byte("head"), false, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, end, err := cli.ReadMessage(ctx, buf)
	if err != nil || end || string(buf[:n]) != "head" {
		t.Fatalf("partial read = %q, end=%v, %v", buf[:n], end, err)
	}
	if err := srv.WriteMessage(ctx, []byte("tail"), true, nil); err != nil {
		t.Fatal(err)
	}
	n, end, err = cli.ReadMessage(ctx, buf)
	if err != nil || !end || string(buf[:n]) != "tail" {
		t.Fatalf("final read = %q, end=%v, %v", buf[:n], end, err)
	}
}

func TestAssociationAndPath(t *testing.T) {
	var st Stack
	ccfg := clientConfig()
	ccfg.Association = [16]byte{0xa, 0xb, 15: 0xc}
	cli, srv, l := pair(t, &st, serverConfig(), ccfg)
	ctx := testContext(t)
	if srv.Association() != ccfg.Association || cli.Association() != ccfg.Association {
		t.Errorf("association: server %x client %x, want %x", srv.Association(), cli.Association(), ccfg.Association)
	}
	send(t, ctx, cli, []byte("ping"), nil)
	if _, err := readAll(ctx, srv, 16); err != nil {
		t.Fatal(err)
	}
	send(t, ctx, srv, []byte("pong"), nil)
	if _, err := readAll(ctx, cli, 16); err != nil {
		t.Fatal(err)
	}
	p := cli.Path()
	if p.Remote != l.Addr() {
		t.Errorf("client path remote %v, want %v", p.Remote, l.Addr())
	}
	if sp := srv.Path(); sp.Remote.Port() != p.Local.Port() || sp.Local.Port() != l.Addr().Port() {
		t.Errorf("server path %v, client path %v", sp, p)
	}
	if p.RTT <= 0 || !p.Active {
		t.Errorf("client path %+v: want an RTT and Active", p)
	}
	if ps := cli.Paths(); len(ps) != 1 {
		t.Errorf("Paths() = %v", ps)
	}
}

func TestForks(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)

	check := func(from, to psi.Transient, msg string) {
		t.Helper()
		send(t, ctx, from, []byte(msg), nil)
		got, err := readAll(ctx, to, 64)
		if err != nil || string(got) != msg {
			t.Fatalf("got %q, %v; want %q", got, err, msg)
		}
	}

	// Client forks; the server gets the fork from its root.
	cf, sf := forkPair(t, ctx, cli, srv, psi.Wine)
	check(cf, sf, "client fork up")
	check(sf, cf, "client fork down")
	if sf.Association() != cli.Association() {
		t.Errorf("fork association %x", sf.Association())
	}

	// The server forks too.
	sf2, cf2 := forkPair(t, ctx, srv, cli, psi.Milk)
	if cf2.(*Transient).Class() != psi.Milk {
		t.Errorf("fork class %v, want milk", cf2.(*Transient).Class())
	}
	check(cf2, sf2, "server fork up")
	check(sf2, cf2, "server fork down")

	// A fork of a fork arrives on that fork, not on the root.
	ff, sff := forkPair(t, ctx, cf, sf, psi.Wine)
	check(ff, sff, "grandchild")

	// Roots still work, and nothing else is waiting on the root.
	check(cli, srv, "root")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if f, err := srv.AcceptFork(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("extra fork on root: %v, %v", f, err)
	}
}

func TestDatagrams(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	unreliable := &psi.WriteOptions{Properties: &post.Properties{Lifetime: time.Second, Unreliable: true}}
	lifetimeOnly := &psi.WriteOptions{Properties: &post.Properties{Lifetime: time.Second}}

	const n = 20
	var want []string
	for i := range n {
		m := fmt.Sprintf("dgram %02d", i)
		want = append(want, m)
		send(t, ctx, cli, []byte(m), unreliable)
		if i%5 == 0 {
			m := fmt.Sprintf("stream %02d", i)
			want = append(want, m)
			send(t, ctx, cli, []byte(m), lifetimeOnly)
		}
	}
	// Too large for a datagram: it goes on the stream.
	big := pattern(8000, 1)
	send(t, ctx, cli, big, unreliable)
	want = append(want, string(big))

	var got []string
	for len(got) < len(want) {
		m, err := readAll(ctx, srv, 100) // smaller than the big message
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		got = append(got, string(m))
	}
	sort.Strings(got)
	sort.Strings(want)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: got %.20q, want %.20q", i, got[i], want[i])
		}
	}
	if s := cli.Stats(); s.DatagramsSent != n {
		t.Errorf("client sent %d datagrams, want %d", s.DatagramsSent, n)
	}
	if s := srv.Stats(); s.DatagramsReceived != n || s.DatagramsDropped != 0 {
		t.Errorf("server stats %+v, want %d received", s, n)
	}

	// Datagrams on a fork reach the fork, in both directions.
	cf, err := cli.Fork(ctx, psi.Milk)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	send(t, ctx, cf, []byte("to fork"), unreliable)
	sf, err := srv.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if m, err := readAll(ctx, sf, 100); err != nil || string(m) != "to fork" {
		t.Fatalf("fork datagram: %q, %v", m, err)
	}
	send(t, ctx, sf, []byte("from fork"), unreliable)
	if m, err := readAll(ctx, cf, 100); err != nil || string(m) != "from fork" {
		t.Fatalf("fork datagram back: %q, %v", m, err)
	}
	if s := sf.(*Transient).Stats(); s.DatagramsSent != 1 || s.DatagramsReceived != 1 {
		t.Errorf("server fork stats %+v", s)
	}
	// A reader blocked on the stream wakes for a datagram.
	done := make(chan string, 1)
	go func() {
		m, err := readAll(ctx, srv, 100)
		if err != nil {
			done <- err.Error()
		}
		done <- string(m)
	}()
	time.Sleep(20 * time.Millisecond) // let the reader block; not a correctness condition
	send(t, ctx, cli, []byte("wake"), unreliable)
	if m := <-done; m != "wake" {
		t.Fatalf("blocked reader got %q", m)
	}
}

func TestZeroRTT(t *testing.T) {
	var st Stack
	scfg := serverConfig()
	scfg.Allow0RTT = true
	ctx := testContext(t)
	l, err := st.Listen(ctx, loopback, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ccfg := clientConfig()
	ccfg.Allow0RTT = true
	ccfg.Security.SessionCache = tls.NewLRUClientSessionCache(4)
	idem := &psi.WriteOptions{Properties: &post.Properties{Idempotent: true}}

	for i, want0RTT := range []bool{false, true} {
		c, err := st.Dial(ctx, l.Addr(), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		cli := c.(*Transient)
		switch {
		case cli.c.early && !want0RTT:
			t.Errorf("dial %d returned before the handshake without a ticket", i)
		case !cli.c.early && want0RTT:
			// On a loaded machine the handshake can complete before
			// Dial returns.
			t.Logf("dial %d: the handshake completed before Dial returned", i)
		}
		msg := fmt.Sprintf("request %d", i)
		send(t, ctx, cli, []byte(msg), idem)
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		srv := s.(*Transient)
		if m, err := readAll(ctx, srv, 64); err != nil || string(m) != msg {
			t.Fatalf("dial %d: server got %q, %v", i, m, err)
		}
		send(t, ctx, srv, []byte("reply"), nil)
		if m, err := readAll(ctx, cli, 64); err != nil || string(m) != "reply" {
			t.Fatalf("dial %d: client got %q, %v", i, m, err)
		}
		<-cli.HandshakeComplete()
		if cli.Used0RTT() != want0RTT || srv.Used0RTT() != want0RTT {
			t.Errorf("dial %d: Used0RTT client %v server %v, want %v", i, cli.Used0RTT(), srv.Used0RTT(), want0RTT)
		}
		cli.Close()
		srv.Close()
	}
}

func TestAuthentication(t *testing.T) {
	var st Stack
	ctx := testContext(t)
	other := testcert.Must()
	pinOf := func(c tls.Certificate) psi.Pin { return psi.PinCertificate(c.Leaf) }

	t.Run("pinned", func(t *testing.T) {
		ccfg := &psi.Config{Security: psi.Security{PinnedKeys: []psi.Pin{pinOf(certs.Leaf)}}}
		cli, srv, _ := pair(t, &st, serverConfig(), ccfg)
		send(t, ctx, cli, []byte("x"), nil)
		if _, err := readAll(ctx, srv, 8); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("psk", func(t *testing.T) {
		psk := []byte("0123456789abcdef0123456789abcdef")
		cfg := func() *psi.Config { return &psi.Config{Security: psi.Security{PSK: psk}} }
		cli, srv, _ := pair(t, &st, cfg(), cfg())
		send(t, ctx, srv, []byte("x"), nil)
		if _, err := readAll(ctx, cli, 8); err != nil {
			t.Fatal(err)
		}
	})

	l, err := st.Listen(ctx, loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for name, sec := range map[string]psi.Security{
		"wrong pin":   {PinnedKeys: []psi.Pin{pinOf(other.Leaf)}},
		"wrong CA":    {RootCAs: other.Pool, ServerName: "localhost"},
		"wrong name":  {RootCAs: certs.Pool, ServerName: "example.org"},
		"wrong PSK":   {PSK: []byte("another key, long enough")},
		"random pins": {PinnedKeys: []psi.Pin{randomPin(t)}},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := st.Dial(ctx, l.Addr(), &psi.Config{Security: sec})
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, post.ErrAuthentication) {
				t.Fatalf("dial error %v does not wrap ErrAuthentication", err)
			}
		})
	}

	t.Run("client auth", func(t *testing.T) {
		scfg := serverConfig()
		scfg.Security.ClientAuth = true
		scfg.Security.RootCAs = certs.Pool
		l, err := st.Listen(ctx, loopback, scfg)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		// Without a certificate, or with one the server does not trust,
		// the client is refused by Dial itself, not on first use.
		wrong := clientConfig()
		wrong.Security.Certificates = []tls.Certificate{other.Leaf}
		for _, ccfg := range []*psi.Config{clientConfig(), wrong} {
			c, err := st.Dial(ctx, l.Addr(), ccfg)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, post.ErrAuthentication) {
				t.Fatalf("refused client: %v", err)
			}
		}
		// With one, it gets in, and each end knows the other's key.
		ccfg := clientConfig()
		ccfg.Security.Certificates = []tls.Certificate{certs.Leaf}
		c, err := st.Dial(ctx, l.Addr(), ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		pin := pinOf(certs.Leaf)
		for _, tr := range []psi.Transient{c, s} {
			id, ok := psi.PeerIdentityOf(tr)
			if !ok || !id.Verified || id.Pin != pin {
				t.Fatalf("peer identity %+v, %v", id, ok)
			}
		}
	})
}

func randomPin(t *testing.T) psi.Pin {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := psi.PinKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOverLimitStreams checks that a message over the receiver's limit
// streams through in parts rather than failing.
func TestOverLimitStreams(t *testing.T) {
	var st Stack
	scfg := serverConfig()
	scfg.MaxMessageSize = 1000
	cli, srv, _ := pair(t, &st, scfg, clientConfig())
	ctx := testContext(t)
	send(t, ctx, cli, pattern(5000, 1), nil)
	if m, err := readAll(ctx, srv, 512); err != nil || !bytes.Equal(m, pattern(5000, 1)) {
		t.Fatalf("5000 B over a 1000 B limit: %d, %v", len(m), err)
	}
}

func TestMalformed(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	cf, sf := forkPair(t, ctx, cli, srv, psi.Wine)

	// A stream that ends inside a message.
	if _, err := cf.(*Transient).s.Write([]byte{0x80, 0, 0, 100, 'x'}); err != nil {
		t.Fatal(err)
	}
	cf.(*Transient).s.Close()
	if _, err := readAll(ctx, sf, 64); !errors.Is(err, post.ErrMalformed) {
		t.Fatalf("truncated message: %v", err)
	}

	// A stream with a bad header is refused; the connection survives.
	s, err := cli.c.qc.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte{9, 9, 9, 9})
	if _, err := s.Read(make([]byte, 1)); !errors.Is(mapError(err), post.ErrMalformed) {
		t.Fatalf("bad header: %v", err)
	}
	// A fork naming an unknown parent is refused.
	s, err = cli.c.qc.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s.Write(appendHeader(nil, header{kind: kindFork, parent: 1000}))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(mapError(err), post.ErrRefused) {
		t.Fatalf("unknown parent: %v", err)
	}
	send(t, ctx, cli, []byte("ok"), nil)
	if m, err := readAll(ctx, srv, 64); err != nil || string(m) != "ok" {
		t.Fatalf("root after bad streams: %q, %v", m, err)
	}
	// Bad datagrams are dropped.
	cli.c.qc.SendDatagram([]byte{0xff})
	cli.c.qc.SendDatagram(appendDatagramTag(nil, 1<<62))
	send(t, ctx, cli, []byte("ok2"), nil)
	if m, err := readAll(ctx, srv, 64); err != nil || string(m) != "ok2" {
		t.Fatalf("root after bad datagrams: %q, %v", m, err)
	}
}

func TestDialErrors(t *testing.T) {
	var st Stack
	ctx := testContext(t)
	// A closed UDP port.
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	cfg := clientConfig()
	cfg.HandshakeTimeout = 3 * time.Second
	start := time.Now()
	_, err = st.Dial(ctx, addr, cfg)
	t.Logf("dial to closed port: %v after %v", err, time.Since(start))
	if !errors.Is(err, post.ErrRefused) && !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("dial to closed port: %v", err)
	}
	var oe *post.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" || oe.Stack != "quic" {
		t.Errorf("error %v is not a dial OpError", err)
	}

	// A silent peer: the handshake times out.
	pc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg.HandshakeTimeout = 300 * time.Millisecond
	_, err = st.Dial(ctx, pc.LocalAddr().(*net.UDPAddr).AddrPort(), cfg)
	if !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("dial to silent peer: %v", err)
	}
	// A cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.Dial(cctx, pc.LocalAddr().(*net.UDPAddr).AddrPort(), cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled dial: %v", err)
	}
}

func TestClose(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)

	// A blocked read returns ErrClosed when the transient closes.
	errc := make(chan error, 1)
	go func() {
		_, _, err := srv.ReadMessage(ctx, make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block; either order must work
	cf, err := cli.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	sf, err := srv.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := <-errc; !errors.Is(err, post.ErrClosed) {
		t.Fatalf("blocked read after Close: %v", err)
	}
	if err := srv.WriteMessage(ctx, []byte("x"), true, nil); !errors.Is(err, post.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
	if _, err := srv.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrClosed) {
		t.Errorf("fork after Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The client sees the end of the root stream.
	if _, _, err := cli.ReadMessage(ctx, make([]byte, 8)); err != io.EOF {
		t.Errorf("client read after server Close: %v", err)
	}
	// Forks live on after the root closes.
	send(t, ctx, cf, []byte("fork lives"), nil)
	if m, err := readAll(ctx, sf, 64); err != nil || string(m) != "fork lives" {
		t.Fatalf("fork after root closed: %q, %v", m, err)
	}
	cf.Close()
	sf.Close()
	cli.Close()
}

func TestCloseDeliversData(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	msg := pattern(1<<20, 3)
	errc := make(chan error, 1)
	go func() {
		// The write blocks on flow control until the server reads.
		err := cli.WriteMessage(ctx, msg, true, nil)
		cli.Close()
		errc <- err
	}()
	m, err := readAll(ctx, srv, 64<<10)
	if werr := <-errc; werr != nil {
		t.Fatal(werr)
	}
	if err != nil || !bytes.Equal(m, msg) {
		t.Fatalf("got %d bytes, %v", len(m), err)
	}
	if _, _, err := srv.ReadMessage(ctx, make([]byte, 1)); err != io.EOF {
		t.Fatalf("after last message: %v", err)
	}
}

func TestListenerClose(t *testing.T) {
	var st Stack
	cli, srv, l := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(ctx); !errors.Is(err, post.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	// Accepted transients outlive the listener.
	send(t, ctx, cli, []byte("after"), nil)
	if m, err := readAll(ctx, srv, 64); err != nil || string(m) != "after" {
		t.Fatalf("after listener Close: %q, %v", m, err)
	}
}

func TestPacketConnHook(t *testing.T) {
	var calls atomic.Int32
	st := Stack{PacketConn: func(local netip.AddrPort) (net.PacketConn, error) {
		calls.Add(1)
		if !local.IsValid() {
			local = loopback
		}
		return net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
	}}
	ccfg := clientConfig()
	ccfg.Local = netip.MustParseAddrPort("127.0.0.1:0")
	cli, srv, _ := pair(t, &st, serverConfig(), ccfg)
	ctx := testContext(t)
	send(t, ctx, cli, []byte("hi"), nil)
	if m, err := readAll(ctx, srv, 8); err != nil || string(m) != "hi" {
		t.Fatalf("%q, %v", m, err)
	}
	if calls.Load() != 2 {
		t.Errorf("PacketConn called %d times, want 2", calls.Load())
	}
}

func TestLocalAddress(t *testing.T) {
	var st Stack
	// Find a free port to dial from.
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	ccfg := clientConfig()
	ccfg.Local = local
	cli, srv, _ := pair(t, &st, serverConfig(), ccfg)
	if cli.Path().Local != local || srv.Path().Remote != local {
		t.Errorf("client path %v, server path %v, want local %v", cli.Path(), srv.Path(), local)
	}
}

// TestNoLeaks runs a full exchange with forks and datagrams and checks that
// every goroutine ends once everything is closed.
func TestNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		var st Stack
		ctx := testContext(t)
		l, err := st.Listen(ctx, loopback, serverConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for range 3 {
			c, err := st.Dial(ctx, l.Addr(), clientConfig())
			if err != nil {
				t.Fatal(err)
			}
			s, err := l.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f, err := c.Fork(ctx, psi.Wine)
			if err != nil {
				t.Fatal(err)
			}
			sf, err := s.AcceptFork(ctx)
			if err != nil {
				t.Fatal(err)
			}
			send(t, ctx, f, []byte("x"), &psi.WriteOptions{Properties: &post.Properties{Lifetime: time.Second, Unreliable: true}})
			if _, err := readAll(ctx, sf, 8); err != nil {
				t.Fatal(err)
			}
			send(t, ctx, c, pattern(100<<10, 0), nil)
			// A fork the client never accepts, and one nobody reads.
			// The connection lives until every transient is closed on
			// both ends (or the idle timeout), so the server closes
			// its fork too.
			sf2, err := s.Fork(ctx, psi.Wine)
			if err != nil {
				t.Fatal(err)
			}
			for _, tr := range []psi.Transient{f, sf, c, s, sf2} {
				tr.Close()
			}
		}
		// A connection the listener never hands out.
		c, err := st.Dial(ctx, l.Addr(), clientConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestZeroRTTRejected dials a server that cannot decrypt the session
// ticket: the 0-RTT data is rejected and sent again, so nothing is lost.
func TestZeroRTTRejected(t *testing.T) {
	var st Stack
	ctx := testContext(t)
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := clientConfig()
	ccfg.Allow0RTT = true
	ccfg.Security.SessionCache = cache // keyed by ServerName "localhost"
	idem := &psi.WriteOptions{Properties: &post.Properties{Idempotent: true}}

	// Get a ticket from a first server.
	scfg := serverConfig()
	scfg.Allow0RTT = true
	cli, srv, _ := pair(t, &st, scfg, ccfg)
	send(t, ctx, srv, []byte("ticket"), nil)
	if _, err := readAll(ctx, cli, 64); err != nil {
		t.Fatal(err)
	}

	// A second server has other ticket keys.
	l, err := st.Listen(ctx, loopback, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := st.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.(*Transient).c.early {
		// On a loaded machine the rejection can arrive before Dial
		// returns; the dial must still succeed, and everything below
		// still holds.
		t.Log("the server rejected 0-RTT before the dial returned")
	}
	send(t, ctx, c, []byte("first"), idem)
	send(t, ctx, c, []byte("second"), idem)
	f, err := c.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	send(t, ctx, f, []byte("on fork"), idem)
	ff, err := f.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	send(t, ctx, ff, []byte("on fork of fork"), idem)
	ff.Close()
	send(t, ctx, c, []byte("after handshake"), nil)

	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, want := range []string{"first", "second", "after handshake"} {
		if m, err := readAll(ctx, s, 64); err != nil || string(m) != want {
			t.Fatalf("root: got %q, %v; want %q", m, err, want)
		}
	}
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if m, err := readAll(ctx, sf, 64); err != nil || string(m) != "on fork" {
		t.Fatalf("fork: %q, %v", m, err)
	}
	sff, err := sf.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sff.Close()
	if m, err := readAll(ctx, sff, 64); err != nil || string(m) != "on fork of fork" {
		t.Fatalf("fork of fork: %q, %v", m, err)
	}
	if _, _, err := sff.ReadMessage(ctx, make([]byte, 1)); err != io.EOF {
		t.Fatalf("fork of fork after Close: %v", err)
	}
	send(t, ctx, sf, []byte("reply"), nil)
	if m, err := readAll(ctx, f, 64); err != nil || string(m) != "reply" {
		t.Fatalf("reply on fork: %q, %v", m, err)
	}
	if c.(*Transient).Used0RTT() || s.(*Transient).Used0RTT() {
		t.Errorf("Used0RTT after rejection")
	}
	f.Close()
}

// TestReadCancel cancels reads waiting at a message boundary and inside a
// message; the transient keeps working.
func TestReadCancel(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, _, err := srv.ReadMessage(short, make([]byte, 8)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read at boundary: %v", err)
	}
	if err := cli.WriteMessage(ctx, []byte("part"), false, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, end, err := srv.ReadMessage(ctx, buf); err != nil || end || string(buf[:n]) != "part" {
		t.Fatalf("first part: %q %v %v", buf[:n], end, err)
	}
	short, cancel = context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, _, err := srv.ReadMessage(short, buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read inside message: %v", err)
	}
	if err := cli.WriteMessage(ctx, []byte("end"), true, nil); err != nil {
		t.Fatal(err)
	}
	if n, end, err := srv.ReadMessage(ctx, buf); err != nil || !end || string(buf[:n]) != "end" {
		t.Fatalf("last part: %q %v %v", buf[:n], end, err)
	}
	send(t, ctx, cli, []byte("next"), nil)
	if m, err := readAll(ctx, srv, 8); err != nil || string(m) != "next" {
		t.Fatalf("after cancelled reads: %q, %v", m, err)
	}
}

func TestIPv6(t *testing.T) {
	pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	pc.Close()
	var st Stack
	ctx := testContext(t)
	l, err := st.Listen(ctx, netip.MustParseAddrPort("[::1]:0"), serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := st.Dial(ctx, l.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send(t, ctx, c, []byte("v6"), nil)
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if m, err := readAll(ctx, s, 8); err != nil || string(m) != "v6" {
		t.Fatalf("%q, %v", m, err)
	}
	if !s.Path().Remote.Addr().Is6() {
		t.Errorf("server path %v", s.Path())
	}
}

// TestConcurrentForks opens forks from both ends at once and moves data on
// all of them concurrently.
func TestConcurrentForks(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	const n = 16
	type end struct{ from, to psi.Transient }
	pairs := make(chan end, 4*n)
	var wg sync.WaitGroup
	for _, side := range [][2]*Transient{{cli, srv}, {srv, cli}} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range n {
				f, err := side[0].Fork(ctx, psi.Wine)
				if err != nil {
					t.Error(err)
					return
				}
				// The peer sees the fork once bytes arrive: send first.
				if err := f.WriteMessage(ctx, []byte("hello"), true, nil); err != nil {
					t.Error(err)
					return
				}
				pairs <- end{f, nil}
			}
		}()
		go func() {
			defer wg.Done()
			for range n {
				f, err := side[1].AcceptFork(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if m, err := readAll(ctx, f, 16); err != nil || string(m) != "hello" {
					t.Errorf("fork greeting %q, %v", m, err)
				}
				pairs <- end{nil, f}
			}
		}()
	}
	wg.Wait()
	close(pairs)
	var mine, theirs []psi.Transient
	for p := range pairs {
		if p.from != nil {
			mine = append(mine, p.from)
		} else {
			theirs = append(theirs, p.to)
		}
	}
	if len(mine) != 2*n || len(theirs) != 2*n {
		t.Fatalf("%d opened, %d accepted", len(mine), len(theirs))
	}
	// Every accepted fork echoes one 64 KiB message.
	for _, f := range theirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer f.Close()
			m, err := readAll(ctx, f, 8<<10)
			if err != nil {
				t.Error(err)
				return
			}
			if err := f.WriteMessage(ctx, m, true, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	for i, f := range mine {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer f.Close()
			msg := pattern(64<<10, byte(i))
			if err := f.WriteMessage(ctx, msg, true, nil); err != nil {
				t.Error(err)
				return
			}
			if m, err := readAll(ctx, f, 8<<10); err != nil || !bytes.Equal(m, msg) {
				t.Errorf("fork %d echo: %d bytes, %v", i, len(m), err)
			}
		}()
	}
	wg.Wait()
}

// TestListenerCloseRefusesPending closes a listener while a connection
// waits for Accept: the client learns it was refused.
func TestListenerCloseRefusesPending(t *testing.T) {
	var st Stack
	ctx := testContext(t)
	l, err := st.Listen(ctx, loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Dial(ctx, l.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the server has the root queued for Accept.
	lq := l.(*Listener)
	for lq.backlog.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	l.Close()
	if _, _, err := c.ReadMessage(ctx, make([]byte, 1)); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("read on a refused connection: %v", err)
	}
}

// TestWriteCancel cancels a write blocked by flow control: the message is
// abandoned, the peer sees the stream reset, and other transients go on.
func TestWriteCancel(t *testing.T) {
	var st Stack
	cli, srv, _ := pair(t, &st, serverConfig(), clientConfig())
	ctx := testContext(t)
	cf, sf := forkPair(t, ctx, cli, srv, psi.Wine)

	// Nobody reads: the write blocks once the flow-control window is full.
	// (A context that ends before the write starts sends nothing and
	// leaves the transient usable, so give the write time to start; the
	// message is built first, as that alone can take a second under -race.)
	msg := pattern(8<<20, 0)
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := cli.WriteMessage(short, msg, true, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked write: %v", err)
	}
	if err := cli.WriteMessage(ctx, []byte("x"), true, nil); err == nil {
		t.Error("write after an abandoned message succeeded")
	}
	if _, err := readAll(ctx, srv, 64<<10); !errors.Is(err, post.ErrReset) {
		t.Errorf("peer read of an abandoned message: %v", err)
	}
	send(t, ctx, cf, []byte("fork"), nil)
	if m, err := readAll(ctx, sf, 16); err != nil || string(m) != "fork" {
		t.Fatalf("fork: %q, %v", m, err)
	}
}

// TestSharedTransport listens and dials on one caller-owned quic-go
// Transport, and reads a non-QUIC packet from the same socket.
func TestSharedTransport(t *testing.T) {
	ctx := testContext(t)
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: pc}
	defer pc.Close()
	defer tr.Close()
	shared := Stack{Transport: func(netip.AddrPort) (*quicgo.Transport, error) { return tr, nil }}
	var plain Stack

	// Incoming: a plain client reaches the shared listener.
	l, err := shared.Listen(ctx, netip.AddrPort{}, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := pc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	if l.Addr().Port() != port {
		t.Errorf("listener on %v, socket on port %d", l.Addr(), port)
	}
	c1, err := plain.Dial(ctx, l.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	s1, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()

	// Outgoing: the shared stack dials another listener from the same port.
	l2, err := plain.Listen(ctx, loopback, serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	c2, err := shared.Dial(ctx, l2.Addr(), clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	s2, err := l2.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.Path().Remote.Port(); got != port {
		t.Errorf("dial came from port %d, want the shared port %d", got, port)
	}
	send(t, ctx, c1, []byte("in"), nil)
	if m, err := readAll(ctx, s1, 8); err != nil || string(m) != "in" {
		t.Fatalf("incoming: %q, %v", m, err)
	}
	send(t, ctx, c2, []byte("out"), nil)
	if m, err := readAll(ctx, s2, 8); err != nil || string(m) != "out" {
		t.Fatalf("outgoing: %q, %v", m, err)
	}

	// Another protocol on the same socket: QUIC leaves it alone.
	raw, err := net.DialUDP("udp4", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// quic-go only queues non-QUIC packets once someone reads them.
	done, cancel := context.WithCancel(ctx)
	cancel()
	tr.ReadNonQUICPacket(done, nil)
	if _, err := raw.Write([]byte{0x00, 'f', 's', 'p'}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _, err := tr.ReadNonQUICPacket(ctx, buf)
	if err != nil || string(buf[:n]) != "\x00fsp" {
		t.Fatalf("non-QUIC packet %q, %v", buf[:n], err)
	}
}

// forkPair forks from a and accepts the fork on b; both close at cleanup.
func forkPair(t testing.TB, ctx context.Context, a, b psi.Transient, class psi.TrafficClass) (fa, fb psi.Transient) {
	t.Helper()
	fa, err := a.Fork(ctx, class)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fa.Close() })
	fb, err = b.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fb.Close() })
	return fa, fb
}

// TestForkBackPressure checks that forks the peer has not accepted are
// held back at its stream limit: Fork waits instead of failing or
// dropping, and goes on once the peer accepts.
func TestForkBackPressure(t *testing.T) {
	st := &Stack{MaxStreams: 4}
	cli, srv, _ := pair(t, st, serverConfig(), clientConfig())
	ctx := testContext(t)
	var forks []psi.Transient
	for range 3 { // the root is the fourth stream
		f, err := cli.Fork(ctx, psi.Wine)
		if err != nil {
			t.Fatal(err)
		}
		send(t, ctx, f, []byte("x"), nil)
		forks = append(forks, f)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := cli.Fork(short, psi.Wine); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fork past the peer's stream limit: %v, want it held back until the context ends", err)
	}
	got := make(chan error, 1)
	go func() {
		f, err := cli.Fork(ctx, psi.Wine)
		if err == nil {
			f.Close()
		}
		got <- err
	}()
	// The server accepts and closes one fork; a stream is free again.
	sf, err := srv.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := readAll(ctx, sf, 8); err != nil || string(m) != "x" {
		t.Fatalf("%q, %v", m, err)
	}
	forks[0].Close()
	sf.Close()
	if err := <-got; err != nil {
		t.Fatalf("fork once a stream was free: %v", err)
	}
}

// TestConnectionEndsWhenBothDone checks that a connection closes as soon
// as both ends have closed every transient, well before the idle timeout,
// and not while one end still holds one.
func TestConnectionEndsWhenBothDone(t *testing.T) {
	var st Stack
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.IdleTimeout = 20 * time.Second
	ccfg.IdleTimeout = 20 * time.Second
	cli, srv, _ := pair(t, &st, scfg, ccfg)
	ctx := testContext(t)
	send(t, ctx, cli, []byte("x"), nil)
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cli.c.qc.Context().Done():
		t.Fatal("connection closed while the server still holds its transient")
	case <-time.After(300 * time.Millisecond):
	}
	// The server still reads what it holds.
	if m, err := readAll(ctx, srv, 8); err != nil || string(m) != "x" {
		t.Fatalf("%q, %v", m, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*conn{cli.c, srv.c} {
		select {
		case <-c.qc.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatal("connection still open 5 s after both ends closed")
		}
	}
}

// TestDisabledFeatures checks that features the policy prohibits are
// switched off: no datagram is sent, and forking fails on both sides.
func TestDisabledFeatures(t *testing.T) {
	var st Stack
	scfg, ccfg := serverConfig(), clientConfig()
	ccfg.Disabled = psi.Datagrams | psi.Fork
	scfg.Disabled = psi.Fork
	cli, srv, _ := pair(t, &st, scfg, ccfg)
	ctx := testContext(t)
	unreliable := &psi.WriteOptions{Properties: &post.Properties{Lifetime: time.Second, Unreliable: true}}
	send(t, ctx, cli, []byte("on the stream"), unreliable)
	if m, err := readAll(ctx, srv, 64); err != nil || string(m) != "on the stream" {
		t.Fatalf("%q, %v", m, err)
	}
	if n := cli.Stats().DatagramsSent; n != 0 {
		t.Errorf("%d datagrams sent with datagrams disabled", n)
	}
	// The server may not send them either: the client did not offer them.
	send(t, ctx, srv, []byte("reply"), unreliable)
	if m, err := readAll(ctx, cli, 64); err != nil || string(m) != "reply" {
		t.Fatalf("%q, %v", m, err)
	}
	if n := srv.Stats().DatagramsSent; n != 0 {
		t.Errorf("server sent %d datagrams to a client that disabled them", n)
	}
	if _, err := cli.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrPolicyConflict) {
		t.Errorf("fork with forking disabled: %v", err)
	}
	if _, err := srv.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrPolicyConflict) {
		t.Errorf("server fork with forking disabled: %v", err)
	}
}

// TestSlowHeaderRefused: a stream whose header does not complete within
// the listener's handshake timeout (a starved or silent peer) is refused
// with ErrRefused, not reported as malformed, and the connection survives.
func TestSlowHeaderRefused(t *testing.T) {
	var st Stack
	scfg := serverConfig()
	scfg.HandshakeTimeout = time.Second
	cli, srv, _ := pair(t, &st, scfg, clientConfig())
	ctx := testContext(t)
	s, err := cli.c.qc.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s.Write(appendHeader(nil, header{kind: kindFork})[:2])
	if _, err := s.Read(make([]byte, 1)); !errors.Is(mapError(err), post.ErrRefused) {
		t.Fatalf("half a header: %v, want ErrRefused", mapError(err))
	}
	send(t, ctx, cli, []byte("ok"), nil)
	if m, err := readAll(ctx, srv, 64); err != nil || string(m) != "ok" {
		t.Fatalf("root after a slow header: %q, %v", m, err)
	}
}
