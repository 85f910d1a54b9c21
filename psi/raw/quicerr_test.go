package raw_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/raw"
)

// TestQUICPeerErrors: what an ordinary QUIC server does to refuse or end
// a raw-quic transient wraps a post sentinel, as on psi/quic.
func TestQUICPeerErrors(t *testing.T) {
	cert, pool := certFor(t, "server.test")
	for _, tc := range []struct {
		name  string
		alpn  string
		serve func(*quic.Conn)
		want  error
	}{
		{"no ALPN in common", "other", nil, post.ErrAuthentication},
		{"stream reset", "x", func(c *quic.Conn) {
			if s, err := c.AcceptStream(context.Background()); err == nil {
				s.CancelWrite(7)
				s.CancelRead(7)
			}
		}, post.ErrReset},
		{"connection closed with an error", "x", func(c *quic.Conn) {
			if _, err := c.AcceptStream(context.Background()); err == nil {
				c.CloseWithError(9, "go away")
			}
		}, post.ErrReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{tc.alpn}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept(context.Background())
				if err == nil && tc.serve != nil {
					tc.serve(c)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cfg := &psi.Config{Security: psi.Security{RootCAs: pool, ServerName: "server.test"}, Linger: 100 * time.Millisecond}
			tr, err := (&raw.QUIC{ALPN: []string{"x"}}).Dial(ctx, ln.Addr().(*net.UDPAddr).AddrPort(), cfg)
			if err == nil {
				defer tr.Close()
				if err = tr.WriteMessage(ctx, []byte("hello"), true, nil); err == nil {
					_, _, err = tr.ReadMessage(ctx, make([]byte, 64))
				}
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want an error wrapping %v", err, tc.want)
			}
		})
	}
}

// TestQUICPathLocal: a raw-quic transient's path names the address it
// sends from, not the unspecified one its socket is bound to, as on
// every other stack (docs/design.md, "Events"). It said [::]:port.
func TestQUICPathLocal(t *testing.T) {
	cert, pool := certFor(t, "server.test")
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(context.Background()); err == nil {
			c.AcceptStream(context.Background())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := &psi.Config{Security: psi.Security{RootCAs: pool, ServerName: "server.test"}, Linger: 100 * time.Millisecond}
	tr, err := (&raw.QUIC{ALPN: []string{"x"}}).Dial(ctx, ln.Addr().(*net.UDPAddr).AddrPort(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if p := tr.Path(); p.Local.Addr() != p.Remote.Addr() || p.Local.Port() == 0 {
		t.Fatalf("path %v, want the loopback address it sends from", p)
	}
}
