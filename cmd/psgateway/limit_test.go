package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
