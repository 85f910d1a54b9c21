package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestUpgradeThroughGateways: an unmodified net/http client asks the
// front for a protocol switch (Connection: Upgrade, as WebSocket does),
// an unmodified net/http origin switches with Hijack, and 1 MB goes each
// way through both gateways over FSP clones, echoed back reversed in
// case, checked byte for byte.
func TestUpgradeThroughGateways(t *testing.T) {
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusUpgradeRequired)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("origin Hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		// Echo as it comes, so both directions are open at once.
		buf := make([]byte, 32<<10)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, werr := conn.Write(flip(buf[:n])); werr != nil {
					t.Errorf("origin write: %v", werr)
					return
				}
			}
			if err == io.EOF {
				conn.(*net.TCPConn).CloseWrite()
				return
			}
			if err != nil {
				t.Errorf("origin read: %v", err)
				return
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go origin.Serve(ln)
	t.Cleanup(func() { origin.Close() })
	front := gateways(t, "http://"+ln.Addr().String())

	data := randBytes(1 << 20)
	req, _ := http.NewRequest(http.MethodGet, "http://"+front+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx)) // a Client Timeout would hide the body's Write
	if err != nil {
		t.Fatal(err)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %q %v %T", resp.StatusCode, b, resp.Header, resp.Body)
	}
	defer rwc.Close()
	go func() {
		for off := 0; off < len(data); off += 10_000 {
			if _, err := rwc.Write(data[off:min(off+10_000, len(data))]); err != nil {
				t.Errorf("client write: %v", err)
				return
			}
		}
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(rwc, got); err != nil {
		t.Fatalf("client read: %v", err)
	}
	if !bytes.Equal(got, flip(data)) {
		t.Fatal("echoed stream differs")
	}
}

// flip inverts every bit: the origin's answer differs from what it got.
func flip(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = ^c
	}
	return out
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestConnectThroughGateways: curl tunnels with CONNECT (-p -x) through
// the front; the back opens TCP to nginx, which it -connect allows, and
// curl's HTTP inside the tunnel fetches files checked by SHA-256. A
// target the back does not allow gets 403.
func TestConnectThroughGateways(t *testing.T) {
	needCurl(t)
	root := t.TempDir()
	sums := files(t, root, []int{0, 1000, 1 << 20, 10 << 20})
	origin := nginx(t, root, "")
	target := strings.TrimPrefix(origin, "http://")
	front := gatewaysArgs(t, origin, "127.0.0.1", nil, nil, []string{"-connect", target}, nil)
	out := t.TempDir()
	for name, sum := range sums {
		dst := filepath.Join(out, name)
		code := curl(t, "-p", "-x", "http://"+front, "-o", dst, "-w", "%{http_connect} %{http_code}", origin+"/"+name)
		if got := fileSum(t, dst); got != sum || code != "200 200" {
			t.Fatalf("%s: %q sha256 %s, want %s", name, code, got, sum)
		}
	}
	// Several requests on one tunnel: curl keeps the connection.
	var urls []string
	for name := range sums {
		urls = append(urls, origin+"/"+name, "-o", filepath.Join(out, "again-"+name))
	}
	curl(t, append([]string{"-p", "-x", "http://" + front}, urls...)...)
	for name, sum := range sums {
		if got := fileSum(t, filepath.Join(out, "again-"+name)); got != sum {
			t.Fatalf("again %s: sha256 %s, want %s", name, got, sum)
		}
	}
	// A raw CONNECT: bytes both ways with a half-close in between.
	c, br, resp, err := rawConnect(t, front, target)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("raw CONNECT: %v %v", resp, err)
	}
	io.WriteString(c, "GET /f1000.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		rest, _ := io.ReadAll(br)
		t.Fatalf("raw CONNECT: %v %q", err, rest)
	}
	b, _ := io.ReadAll(resp.Body)
	if len(b) != 1000 {
		t.Fatalf("raw CONNECT: %d body bytes", len(b))
	}

	// Not allowed: 403 from the back, passed on by the front.
	cmd := exec.Command("curl", "-sS", "-p", "-x", "http://"+front, "-o", "/dev/null", "-w", "%{http_connect}", "http://127.0.0.1:1/")
	code, _ := cmd.Output()
	if string(code) != "403" {
		t.Fatalf("CONNECT to a target not allowed: %q", code)
	}
}

// TestConnectH2C: CONNECT over HTTP/2 (h2c) to the front: the request
// body and the response body are the stream (RFC 9113 8.5).
func TestConnectH2C(t *testing.T) {
	target := tcpTarget(t, func(c net.Conn) {
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write(flip(b))
	})
	front := gatewaysArgs(t, "http://127.0.0.1:1", "127.0.0.1", nil, nil, []string{"-connect", target}, nil)
	data := randBytes(200_000)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data)
		pw.Close() // END_STREAM: the back half-closes the TCP connection
	}()
	resp := h2cConnect(t, front, target, pr)
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, flip(data)) {
		t.Fatalf("got %d bytes (%v), want %d flipped", len(got), err, len(data))
	}
}

// blockedWriter's Write blocks until stop, as an HTTP/2 ResponseWriter
// waiting for flow control until its write deadline.
type blockedWriter struct {
	in      atomic.Bool // a Write is in progress
	stopped chan struct{}
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	w.in.Store(true)
	defer w.in.Store(false)
	<-w.stopped
	return 0, os.ErrDeadlineExceeded
}

// TestSpliceStopsWriter: a splice that ends early (here idle, with a
// write to the client blocked) stops both sides and returns only once
// nothing writes to the client any more: on HTTP/2 the client is the
// ResponseWriter, and a Write after the handler returned panics. Before,
// splice returned with the copy still writing.
func TestSpliceStopsWriter(t *testing.T) {
	aR, aRw := io.Pipe() // the client sends nothing
	defer aRw.Close()
	bR, bRw := io.Pipe()
	aW := &blockedWriter{stopped: make(chan struct{})}
	go bRw.Write([]byte("from the target")) // then the target is quiet
	stop := func() {
		close(aW.stopped)
		aR.Close()
		bR.Close()
	}
	done := make(chan error, 1)
	go func() { done <- splice(aR, aW, bR, io.Discard, 50*time.Millisecond, nil, stop) }()
	select {
	case err := <-done:
		if !errors.Is(err, errTunnelIdle) {
			t.Fatalf("splice: %v, want errTunnelIdle", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an idle splice did not end within 5 s")
	}
	if aW.in.Load() {
		t.Fatal("splice returned while a copy still wrote to the client")
	}
}

// tcpTarget listens on loopback for CONNECT targets, serving each
// connection with serve in a goroutine of its own, until the test ends;
// it returns the address.
func tcpTarget(t *testing.T, serve func(net.Conn)) string {
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
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// rawConnect sends CONNECT target to the HTTP/1.1 proxy at proxy and
// returns the connection and its reader, with the response (nil on a
// failed dial) and any error reading it.
func rawConnect(t *testing.T, proxy, target string) (net.Conn, *bufio.Reader, *http.Response, error) {
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	return c, br, resp, err
}

// h2cConnect sends CONNECT target over h2c to front, with body as the
// client's side of the stream, and returns the 200 response, whose body
// is the other side; closed, and the request cancelled, when the test
// ends (at most 30 s).
func h2cConnect(t *testing.T, front, target string, body io.Reader) *http.Response {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+front, body)
	req.Host = target
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("%s %s", resp.Proto, resp.Status)
	}
	return resp
}
