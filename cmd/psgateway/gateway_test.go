package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
)

// nginx starts nginx with its own configuration in a temporary directory,
// serving root on an ephemeral loopback port; extra is added to its server
// block. It returns the origin URL.
func nginx(t *testing.T, root, extra string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Skip("nginx is not installed (apt-get install nginx); skipping the end-to-end gateway test")
		}
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	default_type application/octet-stream;
	server {
		listen %[2]s;
		root %[3]s;
		%[4]s
	}
}
`, dir, addr, root, extra)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start: %s %s", out.String(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr
}

func needCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (apt-get install curl); skipping the end-to-end gateway test")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// gateways starts a back gateway to origin and a front gateway to it,
// trusting each other by a PSK, and returns the front's address.
func gateways(t *testing.T, origin string, frontArgs ...string) string {
	return gatewaysOn(t, origin, "127.0.0.1", nil, nil, frontArgs...)
}

// gatewaysOn is gateways with the back listening on backIP and each
// side's postsockets stacks given (nil for the defaults).
func gatewaysOn(t *testing.T, origin, backIP string, frontStacks, backStacks []psi.Stack, frontArgs ...string) string {
	t.Helper()
	return gatewaysArgs(t, origin, backIP, frontStacks, backStacks, nil, frontArgs)
}

// gatewaysArgs is gatewaysOn with extra flags for the back as well.
func gatewaysArgs(t *testing.T, origin, backIP string, frontStacks, backStacks []psi.Stack, backArgs, frontArgs []string) string {
	t.Helper()
	front, _ := gatewayPair(t, origin, backIP, frontStacks, backStacks, backArgs, frontArgs)
	return front.addr
}

// gatewayPair is gatewaysArgs returning the gateways.
func gatewayPair(t *testing.T, origin, backIP string, frontStacks, backStacks []psi.Stack, backArgs, frontArgs []string) (front, back *gateway) {
	t.Helper()
	dir := t.TempDir()
	psk := make([]byte, 32)
	rand.Read(psk)
	pskFile := filepath.Join(dir, "psk.hex")
	os.WriteFile(pskFile, []byte(hex.EncodeToString(psk)+"\n"), 0o600)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background()
	startOne := func(stacks []psi.Stack, args ...string) *gateway {
		o, err := parseOptions(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		o.stacks = stacks
		g, err := start(ctx, o, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st := time.Now()
			g.shutdown(ctx)
			t.Logf("%s shutdown in %v", o.mode, time.Since(st))
		})
		return g
	}
	back = startOne(backStacks, append([]string{"-mode", "back", "-listen", net.JoinHostPort(backIP, "0"), "-origin", origin, "-psk-file", pskFile}, backArgs...)...)
	front = startOne(frontStacks, append([]string{"-mode", "front", "-listen", "127.0.0.1:0", "-origin", back.addr, "-psk-file", pskFile}, frontArgs...)...)
	return front, back
}

// files writes files of the given sizes under dir and returns their
// SHA-256 digests by name.
func files(t *testing.T, dir string, sizes []int) map[string]string {
	sums := map[string]string{}
	for _, n := range sizes {
		name := fmt.Sprintf("f%d.bin", n)
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		sums[name] = hex.EncodeToString(s[:])
	}
	return sums
}

func fileSum(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func curl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "--fail", "--max-time", "120"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestCurlThroughGateways: curl → front gateway → FSP clones → back
// gateway → nginx, over HTTP/1.1 and h2c, with bodies from 0 bytes to
// 100 MB and 1,000 small requests, every body checked by SHA-256.
func TestCurlThroughGateways(t *testing.T) {
	needCurl(t)
	root := t.TempDir()
	sizes := []int{0, 1, 1000, 100_000, 1 << 20, 10 << 20}
	if !testing.Short() {
		sizes = append(sizes, 100<<20)
	}
	sums := files(t, root, sizes)
	small := files(t, root, []int{10, 200, 3000, 9000, 20_000})
	origin := nginx(t, root, "")
	front := "http://" + gateways(t, origin)
	checkTransfers(t, front, sums, small, 1000)
}

// checkTransfers fetches every file in sums over HTTP/1.1 and h2c, then n
// small files 16 at a time, and checks each body's SHA-256.
func checkTransfers(t *testing.T, front string, sums, small map[string]string, n int) {
	out := t.TempDir()
	for _, proto := range []string{"--http1.1", "--http2-prior-knowledge"} {
		for name, sum := range sums {
			dst := filepath.Join(out, name)
			start := time.Now()
			code := curl(t, proto, "-o", dst, "-w", "%{http_code} %{http_version}", front+"/"+name)
			if got := fileSum(t, dst); got != sum {
				t.Fatalf("%s %s: sha256 %s, want %s (%s)", proto, name, got, sum, code)
			}
			if wantV := map[string]string{"--http1.1": "1.1", "--http2-prior-knowledge": "2"}[proto]; code != "200 "+wantV {
				t.Fatalf("%s %s: %q", proto, name, code)
			}
			t.Logf("%s %s in %v", proto, name, time.Since(start).Round(time.Millisecond))
		}
	}
	if code, _ := exec.Command("curl", "-sS", "-o", os.DevNull, "-w", "%{http_code}", front+"/missing").Output(); string(code) != "404" {
		t.Fatalf("missing file: %q", code)
	}

	// Many small requests, 16 at a time.
	var cfg strings.Builder
	names := make([]string, 0, len(small))
	for name := range small {
		names = append(names, name)
	}
	for i := range n {
		fmt.Fprintf(&cfg, "url = \"%s/%s?i=%d\"\noutput = \"%s/s%d\"\n", front, names[i%len(names)], i, out, i)
	}
	cfgFile := filepath.Join(out, "curl.cfg")
	os.WriteFile(cfgFile, []byte(cfg.String()), 0o600)
	start := time.Now()
	curl(t, "--parallel", "--parallel-max", "16", "-K", cfgFile)
	t.Logf("%d small requests in %v", n, time.Since(start))
	for i := range n {
		if got, want := fileSum(t, filepath.Join(out, "s"+strconv.Itoa(i))), small[names[i%len(names)]]; got != want {
			t.Fatalf("request %d: sha256 %s, want %s", i, got, want)
		}
	}
}

// TestGatewayTLSAndForwarded: the front serves HTTP/2 over TLS, and the
// origin sees the client in Forwarded.
func TestGatewayTLSAndForwarded(t *testing.T) {
	needCurl(t)
	seen := make(chan http.Header, 1)
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Header.Clone():
		default:
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %d", r.Method, n)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go origin.Serve(ln)
	t.Cleanup(func() { origin.Close() })

	dir := t.TempDir()
	pair := testcert.Must("localhost")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, certFile, "CERTIFICATE", pair.Leaf.Certificate[0])
	key, err := x509MarshalKey(pair.Leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "PRIVATE KEY", key)
	front := gateways(t, "http://"+ln.Addr().String(), "-tls-cert", certFile, "-tls-key", keyFile)

	upload := filepath.Join(dir, "up.bin")
	os.WriteFile(upload, bytes.Repeat([]byte("x"), 3<<20), 0o600)
	got := curl(t, "-k", "--http2", "-w", " %{http_version}", "--data-binary", "@"+upload, "https://"+front+"/up")
	if got != fmt.Sprintf("POST %d 2", 3<<20) {
		t.Fatalf("got %q", got)
	}
	h := <-seen
	fwd := h.Get("Forwarded")
	if !strings.HasPrefix(fwd, `for="127.0.0.1:`) || !strings.Contains(fwd, "proto=https") || strings.Count(fwd, "for=") != 2 {
		t.Fatalf("Forwarded %q", fwd)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func x509MarshalKey(k any) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k) }
