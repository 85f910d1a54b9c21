package fsp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

func randomPin(t *testing.T) psi.Pin {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := psi.PinKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// authCase is one credential against a listener that asks for client
// certificates.
type authCase struct {
	name     string
	server   psi.Security
	client   psi.Security
	wantPeer *tls.Certificate // the client certificate the listener sees, if it gets through
}

func authCases(t *testing.T) []authCase {
	srv, cli, other := testcert.Must(), testcert.Must(), testcert.Must()
	psk := []byte("0123456789abcdef0123456789abcdef")
	pskCert, err := psi.PSKCertificate(psk)
	if err != nil {
		t.Fatal(err)
	}
	byCA := psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}
	byPin := psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true,
		PinnedKeys: []psi.Pin{psi.PinCertificate(cli.Leaf.Leaf)}}
	byPSK := psi.Security{PSK: psk, ClientAuth: true}
	verifyServer := psi.Security{RootCAs: srv.Pool, ServerName: "localhost"}
	with := func(s psi.Security, c tls.Certificate) psi.Security {
		s.Certificates = []tls.Certificate{c}
		return s
	}
	return []authCase{
		{name: "no client cert", server: byCA, client: verifyServer},
		{name: "wrong cert", server: byCA, client: with(verifyServer, other.Leaf)},
		{name: "wrong pin", server: byCA, client: with(psi.Security{PinnedKeys: []psi.Pin{randomPin(t)}}, cli.Leaf)},
		{name: "unpinned client key", server: byPin, client: with(verifyServer, other.Leaf)},
		{name: "wrong PSK", server: byPSK, client: psi.Security{PSK: []byte("fedcba9876543210fedcba9876543210")}},
		{name: "no PSK", server: byPSK, client: with(verifyServer, cli.Leaf)},
		{name: "right cert", server: byCA, client: with(verifyServer, cli.Leaf), wantPeer: &cli.Leaf},
		{name: "right pins", server: byPin,
			client:   with(psi.Security{PinnedKeys: []psi.Pin{psi.PinCertificate(srv.Leaf.Leaf)}}, cli.Leaf),
			wantPeer: &cli.Leaf},
		{name: "right PSK", server: byPSK, client: psi.Security{PSK: psk}, wantPeer: pskCert},
	}
}

// TestClientAuthMatrix: with client authentication on, only the right
// credential gets through; every other fails within a second with
// ErrAuthentication, and Accept never sees it.
func TestClientAuthMatrix(t *testing.T) {
	for _, tc := range authCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t, &Config{Security: tc.server})
			ctx := testContext(t)
			actx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			accepted := make(chan *Conn, 1)
			go func() {
				s, _ := l.Accept(actx)
				accepted <- s
			}()
			start := time.Now()
			c, err := Dial(ctx, addrOf(l), &Config{Security: tc.client})
			took := time.Since(start)
			if tc.wantPeer == nil {
				if err == nil {
					c.Close()
					t.Fatal("dial succeeded")
				}
				if !errors.Is(err, post.ErrAuthentication) {
					t.Fatalf("error %v does not wrap ErrAuthentication", err)
				}
				if took > time.Second {
					t.Fatalf("failed after %v: %v", took, err)
				}
				if s := <-accepted; s != nil {
					s.Close()
					t.Fatal("Accept returned the refused client")
				}
				// The refusal is told to the other end: no attempt lingers.
				for l.Transport().PendingHandshakes() > 0 {
					if time.Since(start) > time.Second {
						t.Fatal("the refused attempt is still pending at the listener")
					}
					time.Sleep(10 * time.Millisecond)
				}
				// A refusal after the key exchange is reported to the
				// listener; a PSK mismatch is refused statelessly.
				if tc.server.PSK == nil {
					select {
					case rerr := <-l.Refused():
						if !errors.Is(rerr, post.ErrAuthentication) {
							t.Fatalf("listener's refusal: %v", rerr)
						}
						t.Logf("listener: %v", rerr)
					case <-time.After(time.Second):
						t.Fatal("the listener did not report the refusal")
					}
				}
				t.Logf("refused after %v: %v", took, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := <-accepted
			if s == nil {
				t.Fatal("Accept returned nothing")
			}
			defer s.Close()
			checkPeer(t, "listener", s, tc.wantPeer)
			// The client's view of the server is the server's leaf.
			if len(c.PeerCertificates()) == 0 {
				t.Fatal("client has no peer certificates")
			}
			go c.SendMessage(ctx, []byte("hello"))
			if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "hello" {
				t.Fatal(m, err)
			}
			// A clone speaks for the same client, on both ends.
			cc, err := c.Fork(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			go cc.SendMessage(ctx, []byte("clone"))
			sc, err := s.AcceptFork(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			checkPeer(t, "listener's clone", sc, tc.wantPeer)
			if !cc.PeerCertificates()[0].Equal(c.PeerCertificates()[0]) {
				t.Fatal("client's clone lost the server's identity")
			}
			// So do connections whose keys the application replaced.
			key := randBytes(32)
			if err := c.InstallKey(key); err != nil {
				t.Fatal(err)
			}
			if err := s.InstallKey(key); err != nil {
				t.Fatal(err)
			}
			checkPeer(t, "listener after InstallKey", s, tc.wantPeer)
		})
	}
}

func checkPeer(t *testing.T, who string, c *Conn, want *tls.Certificate) {
	t.Helper()
	got := c.PeerCertificates()
	if len(got) == 0 || string(got[0].Raw) != string(want.Certificate[0]) {
		t.Fatalf("%s: peer certificates %v (%v), want the client's %v", who, got, got[0].Subject, want.Leaf.Subject)
	}
}

// TestClientAuthStack: the psi stack honours ClientAuth, and the
// transient reports the verified client.
func TestClientAuthStack(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	ctx := testContext(t)
	var st Stack
	l, err := st.Listen(ctx, loopback, &psi.Config{Security: psi.Security{
		Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client := psi.Security{RootCAs: srv.Pool, ServerName: "localhost"}
	start := time.Now()
	if _, err := st.Dial(ctx, l.Addr(), &psi.Config{Security: client}); !errors.Is(err, post.ErrAuthentication) || time.Since(start) > time.Second {
		t.Fatalf("without a client certificate: %v after %v", err, time.Since(start))
	}
	client.Certificates = []tls.Certificate{cli.Leaf}
	c, err := st.Dial(ctx, l.Addr(), &psi.Config{Security: client})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, ok := psi.PeerIdentityOf(s)
	if !ok || !id.Verified || id.Pin != psi.PinCertificate(cli.Leaf.Leaf) {
		t.Fatalf("listener's view of the client: %+v", id)
	}
	if id, _ := psi.PeerIdentityOf(c); !id.Verified || id.Pin != psi.PinCertificate(srv.Leaf.Leaf) {
		t.Fatalf("client's view of the listener: %+v", id)
	}
}

// TestClientAuthTooLarge: a client chain that does not fit a handshake
// packet fails the dial with a clear error.
func TestClientAuthTooLarge(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	l := listen(t, &Config{Security: psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}})
	big := cli.Leaf
	big.Certificate = [][]byte{cli.Leaf.Certificate[0], make([]byte, maxFlightSize)}
	_, err := Dial(testContext(t), addrOf(l), &Config{Security: psi.Security{
		RootCAs: srv.Pool, ServerName: "localhost", Certificates: []tls.Certificate{big}}})
	if !errors.Is(err, post.ErrNotSupported) || !strings.Contains(err.Error(), "handshake flight") {
		t.Fatalf("got %v", err)
	}
}

// TestRefusalNoLarger: the refusal of an INIT_CONNECT under the wrong
// key is a RESET no larger than the request, and nothing is kept.
func TestRefusalNoLarger(t *testing.T) {
	l := listen(t, &Config{Security: psi.Security{PSK: []byte("0123456789abcdef0123456789abcdef")}})
	pc := mustUDP(t)
	const alfid = 0x20000
	p := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: alfid}}
	nonce := randBytes(fcrypto.NonceLen)
	req := handshakePacket(nil, fcrypto.HandshakeKey(nil, alfid), &p, nonce)
	if _, err := pc.WriteTo(req, l.Addr()); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2048)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r wire.Packet
	if err := wire.Parse(buf[:n], &r); err != nil || r.Opcode != wire.Reset || r.Dst != alfid {
		t.Fatalf("reply %x: %v", buf[:n], err)
	}
	if n > len(req) {
		t.Fatalf("reply of %d bytes to a request of %d", n, len(req))
	}
	if _, ok := fcrypto.VerifyHandshakeTag(fcrypto.RefusalKey(nonce), buf[:n]); !ok {
		t.Fatal("refusal not tagged under the client's nonce")
	}
	if l.Transport().NumConns() != 0 || l.Transport().PendingHandshakes() != 0 {
		t.Fatal("refusal left state")
	}
}

// TestClientAuthLoss: a lost CLIENT_AUTH and a lost confirmation are
// recovered by repeating CLIENT_AUTH under fresh packet numbers.
func TestClientAuthLoss(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	var cDrops, sDrops atomic.Int32
	drop := func(op wire.Opcode, n *atomic.Int32) func(b []byte, send func([]byte)) {
		return func(b []byte, send func([]byte)) {
			if len(b) > 1 && wire.Opcode(b[1]) == op && n.Add(1) == 1 {
				return
			}
			send(b)
		}
	}
	lt := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: drop(wire.KeepAlive, &sDrops)}}
	t.Cleanup(func() { lt.Close() })
	l, err := lt.Listen(&Config{Security: psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	ct := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: drop(wire.ClientAuth, &cDrops)}}
	t.Cleanup(func() { ct.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, ct, l, &Config{Security: psi.Security{
		RootCAs: srv.Pool, ServerName: "localhost", Certificates: []tls.Certificate{cli.Leaf}}})
	defer c.Close()
	defer s.Close()
	// The listener confirms after Accept returns: wait for its first
	// acknowledgement rather than race it.
	for deadline := time.Now().Add(5 * time.Second); sDrops.Load() < 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if cDrops.Load() < 2 || sDrops.Load() < 1 {
		t.Fatalf("CLIENT_AUTH sent %d times, confirmations %d", cDrops.Load(), sDrops.Load())
	}
	checkPeer(t, "listener", s, &cli.Leaf)
	go s.SendMessage(ctx, []byte("after loss"))
	if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "after loss" {
		t.Fatal(m, err)
	}
}

// TestClientAuthRefusalLost: when the protected refusal of a CLIENT_AUTH
// is lost, the listener's RESET to the repeated CLIENT_AUTH ends the dial
// well before the handshake timeout.
func TestClientAuthRefusalLost(t *testing.T) {
	srv, cli, other := testcert.Must(), testcert.Must(), testcert.Must()
	var dropped atomic.Int32
	lt := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		if len(b) > 1 && wire.Opcode(b[1]) == wire.Reset && len(b) == overhead+1 && dropped.Add(1) == 1 {
			return // the protected refusal, one octet (its reason) longer than a bare RESET
		}
		send(b)
	}}}
	t.Cleanup(func() { lt.Close() })
	l, err := lt.Listen(&Config{Security: psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Dial(testContext(t), l.Addr().(*net.UDPAddr).AddrPort(), &Config{Security: psi.Security{
		RootCAs: srv.Pool, ServerName: "localhost", Certificates: []tls.Certificate{other.Leaf}}})
	if err == nil || dropped.Load() != 1 {
		t.Fatalf("dial: %v (%d refusals dropped)", err, dropped.Load())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("failed after %v: %v", took, err)
	}
	t.Logf("failed after %v: %v", time.Since(start), err)
}

// TestForgedRefusal: a refusal is believed only under the key of the
// dialer's own nonce; one an off-path party could make is ignored.
func TestForgedRefusal(t *testing.T) {
	answer := func(forge bool) error {
		fake := mustUDP(t)
		errc := make(chan error, 1)
		go func() {
			_, err := Dial(testContext(t), fake.LocalAddr().(*net.UDPAddr).AddrPort(),
				&Config{Security: psi.Security{PSK: []byte("0123456789abcdef0123456789abcdef")}, HandshakeTimeout: 700 * time.Millisecond})
			errc <- err
		}()
		buf := make([]byte, 2048)
		fake.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := fake.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		var req wire.Packet
		if err := wire.Parse(buf[:n], &req); err != nil || req.Opcode != wire.InitConnect {
			t.Fatalf("request %x: %v", buf[:n], err)
		}
		nonce := req.Payload[:fcrypto.NonceLen]
		if forge {
			nonce = randBytes(fcrypto.NonceLen)
		}
		p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: req.Src}}
		fake.WriteTo(handshakePacket(nil, fcrypto.RefusalKey(nonce), &p, []byte{wire.ResetAuthentication}), from)
		return <-errc
	}
	if err := answer(true); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("forged refusal: %v, want the handshake timeout", err)
	}
	if err := answer(false); !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("refusal: %v", err)
	}
}
