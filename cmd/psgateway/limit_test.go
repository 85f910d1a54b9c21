package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// TestFrontConnsPerAddr: one address holding its quota of idle
// keep-alive connections to the front gets its next connection closed
// at once, while a client at another address is still served, and a
// slot freed is usable again.
func TestFrontConnsPerAddr(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer origin.Close()
	front := gatewaysArgs(t, origin.URL, "127.0.0.1", nil, nil, nil, []string{"-max-conns-per-addr", "4"})
	get := func(c net.Conn) error {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		io.ReadAll(resp.Body)
		return nil
	}
	dialFrom := func(ip string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var held []net.Conn
	for range 4 {
		c := dialFrom("127.0.0.5")
		defer c.Close()
		if err := get(c); err != nil {
			t.Fatal(err)
		}
		held = append(held, c) // idle, kept alive
	}
	over := dialFrom("127.0.0.5")
	defer over.Close()
	if err := get(over); err == nil {
		t.Fatal("a fifth connection from one address was served")
	}
	other := dialFrom("127.0.0.6")
	defer other.Close()
	if err := get(other); err != nil {
		t.Fatalf("a client at another address: %v", err)
	}
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialFrom("127.0.0.5")
		err := get(c)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a slot given back was not reused: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFrontConnsTotal: with -max-conns 6, connections from many
// addresses fill the front. While all of them are in the middle of a
// request a newcomer is closed at once (no goroutine, no memory held for
// it); once they idle between requests, a newcomer from a quieter address
// replaces an idle connection of the busiest address, and a request in
// progress is never cut.
func TestFrontConnsTotal(t *testing.T) {
	release := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	defer origin.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	front := gatewaysArgs(t, origin.URL, "127.0.0.1", nil, nil, nil, []string{"-max-conns", "6", "-max-conns-per-addr", "4"})
	dialFrom := func(ip string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	type held struct {
		c  net.Conn
		br *bufio.Reader
	}
	var slow []held
	for i := range 6 {
		ip := "127.0.0.5" // 4 from one address, 2 from another
		if i >= 4 {
			ip = "127.0.0.6"
		}
		c := dialFrom(ip)
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		slow = append(slow, held{c, bufio.NewReader(c)})
	}
	// The six requests reach the origin before the newcomer: wait until
	// a seventh connection is refused (it may be accepted before the
	// sixth is counted in, so retry a little).
	get := func(c net.Conn) error {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		io.ReadAll(resp.Body)
		return nil
	}
	if err := get(dialFrom("127.0.0.7")); err == nil {
		t.Fatal("a seventh connection was served while six requests were in progress")
	}
	close(release)
	for _, h := range slow {
		h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(h.br, nil)
		if err != nil {
			t.Fatalf("a request in progress was cut: %v", err)
		}
		io.ReadAll(resp.Body)
	}
	// All six idle now: a newcomer takes the place of one of
	// 127.0.0.5's, again and again, up to the point where its address
	// holds as many as the busiest.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialFrom("127.0.0.7")
		err := get(c)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a newcomer found no room among idle connections: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	evicted := 0
	for _, h := range slow[:4] {
		h.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)) // the eviction came before the newcomer was served
		if _, err := h.br.ReadByte(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			evicted++
		}
	}
	if evicted != 1 {
		t.Fatalf("%d of the busiest address's idle connections closed, want 1", evicted)
	}
	for _, h := range slow[4:] {
		if err := get(h.c); err != nil {
			t.Fatalf("a connection of the quieter address was closed: %v", err)
		}
	}
}

// TestTunnelIdleTimeout: a CONNECT tunnel carries bytes while they move
// and is closed, at the front and the back, once none has moved either
// way for -tunnel-idle-timeout; before, a hijacked tunnel idled forever.
func TestTunnelIdleTimeout(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	targetClosed := make(chan struct{})
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c) // until the back closes its side
		c.Close()
		close(targetClosed)
	}()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer origin.Close()
	target := echo.Addr().String()
	front := gatewaysArgs(t, origin.URL, "127.0.0.1", nil, nil,
		[]string{"-connect", target, "-tunnel-idle-timeout", "500ms"}, []string{"-tunnel-idle-timeout", "500ms"})
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	// Busy for longer than the timeout: kept.
	buf := make([]byte, 4)
	for i := range 8 {
		io.WriteString(c, "ping")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("echo %d through a busy tunnel: %v", i, err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	// Idle: closed within a few timeouts.
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("an idle tunnel still open after %v (read %d, %v)", time.Since(start), n, err)
	}
	select {
	case <-targetClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the back kept its connection to the target")
	}
}
