package carrier_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
)

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer runs bin with args until the test ends and waits until addr
// accepts connections.
func startServer(t *testing.T, dir, addr string, bin string, args ...string) {
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("%s did not start: %s %s", bin, out.String(), log)
		}
	}
}

func lookBin(t *testing.T, name, pkg string) string {
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	t.Skipf("%s is not installed (apt-get install %s); skipping the ordinary-server test", name, pkg)
	return ""
}

// TestCarrierRedis: a Carrier on plain TCP with the CRLF framer talks
// RESP (inline commands) to a real redis-server.
func TestCarrierRedis(t *testing.T) {
	bin := lookBin(t, "redis-server", "redis-server")
	dir := t.TempDir()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	startServer(t, dir, addr, bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--daemonize", "no")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Plain TCP needs an explicit opt-in.
	if _, err := carrier.InitiateURL(ctx, "tcp://"+addr, framer.Line{}, nil); !errors.Is(err, post.ErrNoCandidates) {
		t.Fatalf("plain TCP without opt-in: err = %v, want ErrNoCandidates", err)
	}
	cfg := &carrier.Config{}
	cfg.Policy.Feature(psi.Encrypted, policy.Avoid)
	c, err := carrier.InitiateURL(ctx, "tcp://"+addr, framer.Line{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Stack() != "raw-tcp" {
		t.Fatalf("stack %q", c.Stack())
	}
	ask := func(cmd string, want ...string) {
		t.Helper()
		if err := c.Send(ctx, []byte(cmd)); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		for _, w := range want {
			m, err := c.Receive(ctx)
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			if string(m.Content) != w {
				t.Fatalf("%s: got %q, want %q", cmd, m.Content, w)
			}
		}
	}
	ask("PING", "+PONG")
	ask("SET greeting hello-redis", "+OK")
	ask("GET greeting", "$11", "hello-redis")
	ask("GET missing", "$-1")
}

// selfSigned writes a certificate for "localhost" and its key to dir and
// returns a pool that trusts it.
func selfSigned(t *testing.T, dir string) *x509.CertPool {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestCarrierNginxTLS: a Carrier on raw TLS with ALPN http/1.1 and an
// application framer sends HTTP/1.1 requests to a real nginx and gets
// each response as one message. The server is verified: a Carrier that
// does not trust its certificate fails with ErrAuthentication.
func TestCarrierNginxTLS(t *testing.T) {
	bin := lookBin(t, "nginx", "nginx")
	dir := t.TempDir()
	roots := selfSigned(t, dir)
	root := filepath.Join(dir, "www")
	os.Mkdir(root, 0o755)
	body := bytes.Repeat([]byte("postsockets "), 5000)
	os.WriteFile(filepath.Join(root, "a.txt"), body, 0o644)
	addr := freeAddr(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	default_type text/plain;
	server {
		listen %[2]s ssl;
		ssl_certificate %[1]s/cert.pem;
		ssl_certificate_key %[1]s/key.pem;
		root %[3]s;
		gzip on;
		gzip_types text/plain;
		gzip_min_length 1;
	}
}
`, dir, addr, root)
	path := filepath.Join(dir, "nginx.conf")
	os.WriteFile(path, []byte(conf), 0o600)
	startServer(t, dir, addr, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path)
	_, port, _ := net.SplitHostPort(addr)
	url := "https://localhost:" + port
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Not trusted: the system roots do not know the certificate.
	if c, err := carrier.InitiateURL(ctx, url, framer.HTTP{}, nil); !errors.Is(err, post.ErrAuthentication) && !errors.Is(err, post.ErrNoCandidates) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("untrusted server: err = %v, want an authentication failure", err)
	}
	cfg := &carrier.Config{Security: psi.Security{RootCAs: roots}}
	c, err := carrier.InitiateURL(ctx, url, framer.HTTP{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Stack() != "raw-tls" {
		t.Fatalf("stack %q", c.Stack())
	}
	// framer.HTTP: one message per request and per response; bodies by
	// Content-Length, chunked (nginx's gzip), or none (HEAD, 304); the
	// requests are pipelined, and each response parses with net/http.
	cases := []struct {
		method, target, extra string
		status                int
		body                  []byte
		chunked               bool
	}{
		{"GET", "/a.txt", "", 200, body, false},
		{"GET", "/missing", "", 404, nil, false},
		{"HEAD", "/a.txt", "", 200, []byte{}, false},
		{"GET", "/a.txt", "Accept-Encoding: gzip\r\n", 200, body, true},
		{"POST", "/a.txt", "Content-Length: 5\r\n", 405, nil, false},
		{"GET", "/a.txt", "If-None-Match: *\r\n", 304, []byte{}, false},
		{"GET", "/a.txt", "", 200, body, false},
	}
	for _, tc := range cases {
		req := tc.method + " " + tc.target + " HTTP/1.1\r\nHost: localhost\r\n" + tc.extra + "\r\n"
		if tc.method == "POST" {
			req += "hello"
		}
		if err := c.Send(ctx, []byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range cases {
		m, err := c.Receive(ctx)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(m.Content)), &http.Request{Method: tc.method})
		if err != nil {
			t.Fatalf("request %d: %v in %q", i, err, m.Content[:min(len(m.Content), 200)])
		}
		var r io.Reader = resp.Body
		if tc.chunked {
			if len(resp.TransferEncoding) == 0 || resp.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("request %d: want a chunked gzip response, got %v %v", i, resp.TransferEncoding, resp.Header)
			}
			if r, err = gzip.NewReader(resp.Body); err != nil {
				t.Fatal(err)
			}
		}
		got, err := io.ReadAll(r)
		if err != nil || resp.StatusCode != tc.status {
			t.Fatalf("request %d (%s %s): status %d, %v", i, tc.method, tc.target, resp.StatusCode, err)
		}
		if tc.body != nil && !bytes.Equal(got, tc.body) {
			t.Fatalf("request %d: body of %d bytes, want %d", i, len(got), len(tc.body))
		}
	}
}

// TestCarrierQUICURL: quic://host:port?alpn=… gives a Carrier on one
// stream of an ordinary QUIC server, and Fork a new stream.
func TestCarrierQUICURL(t *testing.T) {
	dir := t.TempDir()
	roots := selfSigned(t, dir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quicgo.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x-echo"}}, nil)
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
					go func() { io.Copy(s, s); s.Close() }()
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := fmt.Sprintf("quic://localhost:%d?alpn=x-echo", ln.Addr().(*net.UDPAddr).Port)
	cfg := &carrier.Config{Security: psi.Security{RootCAs: roots}, Linger: 200 * time.Millisecond}
	c, err := carrier.InitiateURL(ctx, url, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, cc := range []*carrier.Carrier{c, f, c} {
		if err := cc.Send(ctx, []byte("echo "+cc.Stack())); err != nil {
			t.Fatal(err)
		}
		m, err := cc.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Content) != "echo raw-quic" {
			t.Fatalf("got %q", m.Content)
		}
	}
}
