package raw_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/framer"
	"github.com/postsockets/postsockets/psi/raw"
)

// TestTLSRemoteAlerts: a TLS server's refusal reaches the caller as an
// error wrapping post.ErrAuthentication, as on psi/tcp and QUIC, whether
// it comes in the handshake (no ALPN protocol in common) or, on TLS
// 1.3, at the first read (a client certificate required). Both wrapped
// no post sentinel: crypto/tls reports an alert the peer sent as a
// *net.OpError, not the tls.AlertError the dial looked for.
func TestTLSRemoteAlerts(t *testing.T) {
	cert, pool := certFor(t, "server.test")
	for _, tc := range []struct {
		name string
		srv  *tls.Config
	}{
		{"no ALPN in common", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"other"}}},
		{"client certificate required", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := lineServer(t, func(c net.Conn) net.Conn {
				s := tls.Server(c, tc.srv)
				s.Handshake()
				return s
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st := &raw.TLS{ALPN: []string{"x-lines"}, Framer: framer.Line{}}
			tr, err := st.Dial(ctx, addr, &psi.Config{Security: psi.Security{RootCAs: pool, ServerName: "server.test"}})
			if err == nil {
				defer tr.Close()
				if err = tr.WriteMessage(ctx, []byte("hello"), true, nil); err == nil {
					_, _, err = tr.ReadMessage(ctx, make([]byte, 64))
				}
			}
			if !errors.Is(err, post.ErrAuthentication) {
				t.Fatalf("%v, want an error wrapping ErrAuthentication", err)
			}
		})
	}
}

// TestTLSDialNotTLS: a TLS dial to a server that answers in plain text
// fails with post.ErrMalformed, and to one that hangs up with
// post.ErrReset; both wrapped no post sentinel.
func TestTLSDialNotTLS(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  error
	}{{"HTTP/1.1 400 Bad Request\r\n\r\n", post.ErrMalformed}, {"", post.ErrReset}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte(tc.reply))
				c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = (&raw.TLS{}).Dial(ctx, ln.Addr().(*net.TCPAddr).AddrPort(), &psi.Config{Security: psi.Security{InsecureSkipVerify: true}})
		cancel()
		ln.Close()
		if !errors.Is(err, tc.want) {
			t.Errorf("reply %q: %v, want an error wrapping %v", tc.reply, err, tc.want)
		}
	}
}
