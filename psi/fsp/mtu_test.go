package fsp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// longChain returns p's leaf followed by filler certificates that the
// verifier ignores, about extra bytes more.
func longChain(t testing.TB, p *testcert.Pair, extra int) tls.Certificate {
	t.Helper()
	id := p.Leaf
	id.Certificate = append([][]byte(nil), p.Leaf.Certificate...)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < extra; {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(n + 1)),
			Subject:      pkix.Name{CommonName: "filler"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			ExtraExtensions: []pkix.Extension{{
				Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, 1400),
			}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		id.Certificate = append(id.Certificate, der)
		n += len(der)
	}
	return id
}

// mtuConn drops datagrams larger than max, as a path whose MTU is
// smaller would, and records the largest it was asked to send (path MTU
// probes aside) and the bytes sent under each opcode.
func mtuConn(t *testing.T, max int, largest *atomic.Int64, byOp *[256]atomic.Int64) *hookConn {
	return &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		if len(b) > 1 {
			byOp[b[1]].Add(int64(len(b)))
		}
		for len(b) > 1 && wire.Opcode(b[1]) != wire.KeepAlive { // path MTU probes are KEEP_ALIVEs

			old := largest.Load()
			if int64(len(b)) <= old || largest.CompareAndSwap(old, int64(len(b))) {
				break
			}
		}
		if len(b) <= max {
			send(b)
		}
	}}
}

// TestHandshakeLongChainBaseSize: chains of about 6 KB on both ends (the
// listener asks for a client certificate) connect over a path that
// drops every datagram larger than BaseDatagramSize, and no handshake
// datagram is larger.
func TestHandshakeLongChainBaseSize(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	var sMax, cMax atomic.Int64
	var sOps, cOps [256]atomic.Int64
	lt := &Transport{Conn: mtuConn(t, BaseDatagramSize, &sMax, &sOps)}
	t.Cleanup(func() { lt.Close() })
	l, err := lt.Listen(&Config{Security: psi.Security{
		Certificates: []tls.Certificate{longChain(t, srv, 6000)}, ClientAuth: true, RootCAs: cli.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	ct := &Transport{Conn: mtuConn(t, BaseDatagramSize, &cMax, &cOps)}
	t.Cleanup(func() { ct.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, ct, l, &Config{Security: psi.Security{
		RootCAs: srv.Pool, ServerName: "localhost", Certificates: []tls.Certificate{longChain(t, cli, 6000)}}})
	defer c.Close()
	defer s.Close()
	if sMax.Load() > BaseDatagramSize || cMax.Load() > BaseDatagramSize {
		t.Fatalf("largest handshake datagrams: listener %d, client %d bytes", sMax.Load(), cMax.Load())
	}
	// Anti-amplification: the listener's flight is at most three times
	// the CONNECT_REQUESTs it answers.
	if got, req := sOps[wire.AckConnectReq].Load(), cOps[wire.ConnectRequest].Load(); got > 3*req || got < 6000 {
		t.Fatalf("ACK_CONNECT_REQ flight of %d bytes for %d bytes of CONNECT_REQUEST", got, req)
	}
	go s.SendMessage(ctx, []byte("over a small path"))
	if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "over a small path" {
		t.Fatal(m, err)
	}
}

// TestResumptionBaseSize: with client authentication, the ticket, RESTORE
// and its answer all fit BaseDatagramSize, so resumption works over a
// path that drops anything larger; a client chain too long for RESTORE
// gets no ticket and connects with a full handshake.
func TestResumptionBaseSize(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	var sMax, cMax atomic.Int64
	var sOps, cOps [256]atomic.Int64
	lt := &Transport{Conn: mtuConn(t, BaseDatagramSize, &sMax, &sOps)}
	t.Cleanup(func() { lt.Close() })
	l, err := lt.Listen(&Config{Security: psi.Security{
		Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	ct := &Transport{Conn: mtuConn(t, BaseDatagramSize, &cMax, &cOps)}
	t.Cleanup(func() { ct.Close() })
	ctx := testContext(t)
	for _, tc := range []struct {
		name   string
		id     tls.Certificate
		resume bool
	}{{"leaf", cli.Leaf, true}, {"long chain", longChain(t, cli, 6000), false}} {
		cache := tls.NewLRUClientSessionCache(4)
		ccfg := &Config{Security: psi.Security{RootCAs: srv.Pool, ServerName: "localhost",
			Certificates: []tls.Certificate{tc.id}, SessionCache: cache}}
		c1, s1 := dialAccept(t, ctx, ct, l, ccfg)
		pingPong(t, c1, s1)
		if tc.resume {
			waitTicket(t, cache, c1)
		}
		c1.Close()
		c2, s2 := dialAccept(t, ctx, ct, l, ccfg)
		pingPong(t, c2, s2)
		if c2.Resumed() != tc.resume {
			t.Fatalf("%s: resumed %v", tc.name, c2.Resumed())
		}
		c2.Close()
	}
	if sMax.Load() > BaseDatagramSize || cMax.Load() > BaseDatagramSize {
		t.Fatalf("largest datagrams: listener %d, client %d bytes", sMax.Load(), cMax.Load())
	}
}

// TestHandshakeFragmentLoss: a lost fragment of a long listener chain
// (the second, then the fifth) is sent again and the dial completes.
func TestHandshakeFragmentLoss(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	var n atomic.Int32
	lt := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		if len(b) > 1 && wire.Opcode(b[1]) == wire.AckConnectReq {
			if k := n.Add(1); k == 2 || k == 5 {
				return
			}
		}
		send(b)
	}}}
	t.Cleanup(func() { lt.Close() })
	l, err := lt.Listen(&Config{Security: psi.Security{
		Certificates: []tls.Certificate{longChain(t, srv, 6000)}, RootCAs: cli.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	ct := &Transport{Conn: mustUDP(t)}
	t.Cleanup(func() { ct.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, ct, l, &Config{Security: psi.Security{RootCAs: srv.Pool, ServerName: "localhost"}})
	defer c.Close()
	defer s.Close()
	if n.Load() < 8 {
		t.Fatalf("%d ACK_CONNECT_REQ fragments sent", n.Load())
	}
	pingPong(t, c, s)
}
