package raw_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/internal/ctxend"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
	"github.com/postsockets/postsockets/psi/raw"
)

// lineServer answers each CRLF line with its upper-case form, and "QUIT"
// by closing.
func lineServer(t *testing.T, wrap func(net.Conn) net.Conn) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if wrap != nil {
				c = wrap(c)
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == "QUIT\r\n" {
						return
					}
					if _, err := io.WriteString(c, strings.ToUpper(l)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func roundTrip(t *testing.T, tr psi.Transient, msg string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.WriteMessage(ctx, []byte(msg), true, nil); err != nil {
		t.Fatal(err)
	}
	var out []byte
	buf := make([]byte, 7)
	for {
		n, end, err := tr.ReadMessage(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:n]...)
		if end {
			return string(out)
		}
	}
}

func TestTCPLines(t *testing.T) {
	addr := lineServer(t, nil)
	st := &raw.TCP{Framer: framer.Line{}}
	if !st.Features().Has(psi.Plaintext) || st.Features().Has(psi.Encrypted) {
		t.Fatalf("features %v", st.Features())
	}
	ctx := context.Background()
	tr, err := st.Dial(ctx, addr, &psi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if got := roundTrip(t, tr, "hello there, server"); got != "HELLO THERE, SERVER" {
		t.Fatalf("got %q", got)
	}
	if _, err := tr.Fork(ctx, psi.Wine); !errors.Is(err, post.ErrNotSupported) {
		t.Fatalf("Fork: %v", err)
	}
	if _, err := tr.AcceptFork(ctx); !errors.Is(err, post.ErrNotSupported) {
		t.Fatalf("AcceptFork: %v", err)
	}
	// A read that nothing answers ends with its context, within 1 s.
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	start := time.Now()
	_, _, err = tr.ReadMessage(rctx, make([]byte, 10))
	cancel()
	if !errors.Is(err, post.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("read with no reply: %v after %v", err, time.Since(start))
	}
	// The same when the socket's deadline fires before the context's
	// timer; a cancelled read is the cancellation, not a timeout (it
	// said ErrTimeout, wrapping no context error, in both).
	late, cancel := ctxend.Late(time.Hour)
	_, _, err = tr.ReadMessage(late, make([]byte, 10))
	cancel()
	if !errors.Is(err, post.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read past its deadline, context not yet done: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, _, err = tr.ReadMessage(cctx, make([]byte, 10)); !errors.Is(err, context.Canceled) || errors.Is(err, post.ErrTimeout) {
		t.Fatalf("cancelled read: %v, want context.Canceled alone", err)
	}
	// The transient still works after a timed-out read.
	if got := roundTrip(t, tr, "again"); got != "AGAIN" {
		t.Fatalf("got %q", got)
	}
	// The server's close is io.EOF.
	if err := tr.WriteMessage(ctx, []byte("QUIT"), true, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.ReadMessage(ctx, make([]byte, 10)); err != io.EOF {
		t.Fatalf("after server close: %v, want io.EOF", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.ReadMessage(ctx, make([]byte, 10)); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	if _, err := st.Dial(ctx, addr, &psi.Config{Security: psi.Security{PinnedKeys: []psi.Pin{{1}}}}); !errors.Is(err, post.ErrNotSupported) {
		t.Fatalf("plain TCP with pins: %v", err)
	}
	if _, err := st.Listen(ctx, netip.AddrPort{}, &psi.Config{}); !errors.Is(err, post.ErrNotSupported) {
		t.Fatalf("Listen: %v", err)
	}
}

func TestTCPRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	if _, err := (&raw.TCP{}).Dial(context.Background(), addr, &psi.Config{}); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("dial to a closed port: %v", err)
	}
}

func certFor(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestTLSVerifiesServer(t *testing.T) {
	cert, pool := certFor(t, "server.test")
	var alpn = make(chan string, 8)
	addr := lineServer(t, func(c net.Conn) net.Conn {
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x-lines"}})
		s.Handshake()
		alpn <- s.ConnectionState().NegotiatedProtocol
		return s
	})
	ctx := context.Background()
	st := &raw.TLS{ALPN: []string{"x-lines"}, Framer: framer.Line{}}
	good := []psi.Security{
		{RootCAs: pool, ServerName: "server.test"},
		{PinnedKeys: []psi.Pin{psi.PinCertificate(cert.Leaf)}},
	}
	for i, sec := range good {
		tr, err := st.Dial(ctx, addr, &psi.Config{Security: sec})
		if err != nil {
			t.Fatalf("trust %d: %v", i, err)
		}
		if p := <-alpn; p != "x-lines" {
			t.Fatalf("server negotiated %q", p)
		}
		if id, _ := psi.PeerIdentityOf(tr); !id.Verified || id.Pin != psi.PinCertificate(cert.Leaf) {
			t.Fatalf("identity %+v", id)
		}
		if got := roundTrip(t, tr, "tls line"); got != "TLS LINE" {
			t.Fatalf("got %q", got)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	bad := []psi.Security{
		{ServerName: "server.test"}, // system roots do not know it
		{RootCAs: pool, ServerName: "other.test"},
		{PinnedKeys: []psi.Pin{{1, 2, 3}}},
	}
	for i, sec := range bad {
		tr, err := st.Dial(ctx, addr, &psi.Config{Security: sec})
		if !errors.Is(err, post.ErrAuthentication) {
			if tr != nil {
				tr.Close()
			}
			t.Fatalf("bad trust %d: %v, want ErrAuthentication", i, err)
		}
		<-alpn
	}
}

func TestQUICStreamsAndForks(t *testing.T) {
	cert, pool := certFor(t, "server.test")
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x-echo"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				for {
					s, err := c.AcceptStream(context.Background())
					if err != nil {
						return
					}
					go func() { io.Copy(s, s); s.Close() }() // echo, framing and all
				}
			}()
		}
	}()
	addr := ln.Addr().(*net.UDPAddr).AddrPort()
	ctx := context.Background()
	st := &raw.QUIC{ALPN: []string{"x-echo"}}
	cfg := &psi.Config{Security: psi.Security{RootCAs: pool, ServerName: "server.test"}, Linger: 100 * time.Millisecond}
	tr, err := st.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, tr, "on the first stream"); got != "on the first stream" {
		t.Fatalf("got %q", got)
	}
	f, err := tr.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, f, "on a fork"); got != "on a fork" {
		t.Fatalf("got %q", got)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, f, "fork outlives the root"); got != "fork outlives the root" {
		t.Fatalf("got %q", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := (&raw.QUIC{}).Dial(ctx, addr, cfg); !errors.Is(err, post.ErrInvalid) {
		t.Fatalf("QUIC with no ALPN: %v", err)
	}
	bad := &psi.Config{Security: psi.Security{RootCAs: pool, ServerName: "other.test"}}
	if tr, err := st.Dial(ctx, addr, bad); !errors.Is(err, post.ErrAuthentication) {
		if tr != nil {
			tr.Close()
		}
		t.Fatalf("QUIC to an unverified server: %v", err)
	}
}

// Close ends a blocked read at once with ErrClosed; Abort resets the
// connection, so the server sees an error rather than an orderly end.
func TestCloseAndAbort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, err := io.Copy(io.Discard, c)
				served <- err
				c.Close()
			}()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ctx := context.Background()
	st := &raw.TCP{}
	tr, err := st.Dial(ctx, addr, &psi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, _, err := tr.ReadMessage(ctx, make([]byte, 8))
		read <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := tr.WriteMessage(ctx, []byte("bye"), true, nil); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if !errors.Is(err, post.ErrClosed) {
			t.Fatalf("blocked read after Close: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("blocked read did not end within 1 s of Close")
	}
	if err := <-served; err != nil {
		t.Fatalf("server after an orderly close: %v", err)
	}
	if err := tr.WriteMessage(ctx, []byte("late"), true, nil); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}

	tr, err = st.Dial(ctx, addr, &psi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.WriteMessage(ctx, []byte("partial"), false, nil); err != nil {
		t.Fatal(err)
	}
	psi.Abort(tr, nil)
	if err := <-served; err == nil {
		t.Fatal("server saw an orderly end after Abort")
	}
}
