package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
)

// TestConnectPolicyMatch: targets match a -connect entry exactly; other
// spellings of an address or a name match nothing.
func TestConnectPolicyMatch(t *testing.T) {
	p := newConnectPolicy("example.com:443, 10.0.0.1:22")
	for target, want := range map[string]bool{
		"example.com:443":      true,
		"EXAMPLE.com:443":      true,
		"example.com.:443":     false,
		"example.com:0443":     false,
		"example.com":          false,
		"10.0.0.1:22":          true,
		"10.1:22":              false,
		"[::ffff:10.0.0.1]:22": false,
		"167772161:22":         false,
		"127.0.0.1:443":        false,
	} {
		if got := p.allows(target); got != want {
			t.Errorf("allows(%q) = %v, want %v", target, got, want)
		}
	}
	if newConnectPolicy("").allows("example.com:443") {
		t.Error("an empty -connect allowed a target")
	}
}

// TestConnectPolicyResolved: a listed name, or any target under "*",
// that resolves to the gateway's own loopback, the unspecified address,
// a link-local address (cloud metadata) or multicast is refused when
// dialled (DNS rebinding); public and private addresses are not.
func TestConnectPolicyResolved(t *testing.T) {
	p := newConnectPolicy("rebind.example:80,*")
	control := p.dialer("rebind.example:80").Control
	for addr, refused := range map[string]bool{
		"127.0.0.1:80":          true,
		"127.3.4.5:80":          true,
		"[::1]:80":              true,
		"[::ffff:127.0.0.1]:80": true,
		"0.0.0.0:80":            true,
		"[::]:80":               true,
		"169.254.169.254:80":    true,
		"[fe80::1]:80":          true,
		"224.0.0.1:80":          true,
		"93.184.216.34:80":      false,
		"10.0.0.1:80":           false,
	} {
		err := control("tcp", addr, nil)
		if got := errors.Is(err, errConnectAddr); got != refused {
			t.Errorf("%s: refused %v, want %v", addr, got, refused)
		}
	}
}

// TestConnectOwnLoopback: the back, with -connect *, answers 403 to a
// CONNECT to its own loopback, by address or by localhost; listed
// literally, the same target is connected.
func TestConnectOwnLoopback(t *testing.T) {
	_, port, _ := net.SplitHostPort(tcpTarget(t, func(c net.Conn) { c.Close() }))
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		list, target string
		code         int
	}{
		{"*", "127.0.0.1:" + port, 403},
		{"*", "localhost:" + port, 403},
		{"*", "[::ffff:127.0.0.1]:" + port, 403},
		{"*", "0.0.0.0:" + port, 403},
		{"", "127.0.0.1:" + port, 403},
		{"127.0.0.1:" + port, "127.0.0.1:" + port, 200},
		{"localhost:" + port, "localhost:" + port, 200},
	} {
		srv := httptest.NewServer(backConnect(newConnectPolicy(tc.list), 0, log))
		c, _, resp, err := rawConnect(t, srv.Listener.Addr().String(), tc.target)
		if err != nil || resp.StatusCode != tc.code {
			t.Errorf("-connect %q, CONNECT %s: %v %v, want %d", tc.list, tc.target, resp, err, tc.code)
		}
		c.Close()
		srv.Close()
	}
}
