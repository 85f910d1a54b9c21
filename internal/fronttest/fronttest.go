// Package fronttest checks the connection limits of an ordinary HTTP
// front (httpcarrier.LimitListener) from the outside, over loopback
// sockets from several 127.0.0.0/8 addresses: the same checks for the
// listener itself, cmd/psgateway and examples/gateway.
package fronttest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// DialFrom opens a TCP connection from ip to addr, closed when the test
// ends.
func DialFrom(t testing.TB, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Get sends GET / on c and reads the whole response, within 10 s.
func Get(c net.Conn) error {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	_, err = io.ReadAll(resp.Body)
	return err
}

// PerAddr checks a front at addr that lets one address hold perAddr
// connections: 127.0.0.5 holding its quota of idle keep-alive
// connections gets its next one closed at once, a client at 127.0.0.6
// is still served, and a place given back is usable again.
func PerAddr(t *testing.T, addr string, perAddr int) {
	t.Helper()
	var held []net.Conn
	for range perAddr {
		c := DialFrom(t, "127.0.0.5", addr)
		if err := Get(c); err != nil {
			t.Fatal(err)
		}
		held = append(held, c) // idle, kept alive
	}
	if err := Get(DialFrom(t, "127.0.0.5", addr)); err == nil {
		t.Fatalf("connection %d from one address was served", perAddr+1)
	}
	if err := Get(DialFrom(t, "127.0.0.6", addr)); err != nil {
		t.Fatalf("a client at another address: %v", err)
	}
	held[0].Close()
	Eventually(t, 5*time.Second, "a place given back was not reused", func() error {
		c := DialFrom(t, "127.0.0.5", addr)
		defer c.Close()
		return Get(c)
	})
}

// Total checks a front at addr that holds at most 6 connections, at most
// 4 from one address, and whose GET /slow waits until release is
// closed: while six requests are in progress a newcomer is closed at
// once; once they idle between requests, a newcomer from a quieter
// address replaces one idle connection of the busiest address, and a
// request in progress is never cut.
func Total(t *testing.T, addr string, release chan struct{}) {
	t.Helper()
	slow := fill(t, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := Get(DialFrom(t, "127.0.0.7", addr)); err == nil {
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
	// 127.0.0.5's.
	Eventually(t, 5*time.Second, "a newcomer found no room among idle connections", func() error {
		return Get(DialFrom(t, "127.0.0.7", addr))
	})
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
		if err := Get(h.c); err != nil {
			t.Fatalf("a connection of the quieter address was closed: %v", err)
		}
	}
}

// SlowHeads checks a front at addr that holds at most 6 connections, at
// most 4 from one address: connections that send only part of a request
// head fill it; while their heads are younger than a second a newcomer
// is closed, and after it a newcomer from a quieter address replaces one
// of the busiest address's, so slow heads hold the front no longer than
// that, not until the server's header timeout. The others still finish
// their requests.
func SlowHeads(t *testing.T, addr string) {
	t.Helper()
	slow := fill(t, addr, "GET / HTTP/1.1\r\n")
	if err := Get(DialFrom(t, "127.0.0.7", addr)); err == nil {
		t.Fatal("a newcomer was served while six fresh request heads were arriving")
	}
	time.Sleep(evictAfter)
	Eventually(t, 5*time.Second, "slow request heads kept a newcomer out", func() error {
		return Get(DialFrom(t, "127.0.0.7", addr))
	})
	evicted := 0
	for _, h := range slow {
		io.WriteString(h.c, "Host: x\r\n\r\n")
		h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if resp, err := http.ReadResponse(h.br, nil); err != nil {
			evicted++
		} else {
			io.ReadAll(resp.Body)
		}
	}
	if evicted != 1 {
		t.Fatalf("%d slow heads closed, want 1", evicted)
	}
}

// evictAfter is how long a front leaves a connection without a complete
// request head alone (httpcarrier's evictAfter), with a margin.
const evictAfter = 1100 * time.Millisecond

// held is a connection the checks hold open, with its reader.
type held struct {
	c  net.Conn
	br *bufio.Reader
}

// fill opens 6 connections to addr, 4 from 127.0.0.5 and 2 from
// 127.0.0.6, and sends send on each.
func fill(t *testing.T, addr, send string) []held {
	var hs []held
	for i := range 6 {
		ip := "127.0.0.5"
		if i >= 4 {
			ip = "127.0.0.6"
		}
		c := DialFrom(t, ip, addr)
		io.WriteString(c, send)
		hs = append(hs, held{c, bufio.NewReader(c)})
	}
	return hs
}

// SlowHandler answers "ok", GET /slow once release is closed (or its
// client went away).
func SlowHandler(release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
}

// Eventually retries try every 20 ms until it returns nil, failing the
// test with msg and its last error after d.
func Eventually(t testing.TB, d time.Duration, msg string, try func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", msg, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
