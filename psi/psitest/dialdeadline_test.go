package psitest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
	"github.com/postsockets/postsockets/psi/quic"
	"github.com/postsockets/postsockets/psi/tcp"
)

// TestDialPastDeadline: a Dial that its context's deadline cuts short
// fails with an error wrapping both post.ErrTimeout and
// context.DeadlineExceeded on every stack. FSP's wrapped no ErrTimeout,
// QUIC's no context error (it kept only the text), and TCP's, cut in its
// hello by the deadline it sets on the socket, only os.ErrDeadlineExceeded.
func TestDialPastDeadline(t *testing.T) {
	certs := testcert.Must()
	udp, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close() // a peer that never answers
	// A TLS server that completes the handshake and never answers the
	// hello that follows.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{certs.Leaf}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
				c.Read(make([]byte, 1024))
				time.Sleep(2 * time.Second)
			}()
		}
	}()
	silentUDP := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	silentTCP := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, c := range []struct {
		stack psi.Stack
		addr  netip.AddrPort
	}{{&fsp.Stack{}, silentUDP}, {&quic.Stack{}, silentUDP}, {tcp.Stack{}, silentTCP}} {
		t.Run(c.stack.Name(), func(t *testing.T) {
			cfg := &psi.Config{Security: psi.Security{RootCAs: certs.Pool, ServerName: "localhost"}}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			tr, err := c.stack.Dial(ctx, c.addr, cfg)
			if err == nil {
				tr.Close()
				t.Fatal("dial to a silent peer succeeded")
			}
			if !errors.Is(err, post.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("dial past its deadline: %v, want ErrTimeout and context.DeadlineExceeded", err)
			}
		})
	}
}
