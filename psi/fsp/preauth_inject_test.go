package fsp

import (
	"context"
	"crypto/tls"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// sealAs sends a packet of op from c under its keys, as a client that
// skips CLIENT_AUTH would. Called with c.mu held.
func sealAs(c *Conn, op wire.Opcode, flags uint8, payload []byte) {
	p := c.header(op, flags, c.snd.Next())
	hdr := wire.AppendHeader(nil, &p)
	pn := c.pn
	c.pn++
	if out, err := c.tx.Seal(hdr, pn, hdr, payload); err == nil {
		c.t.write(out, &c.remote)
	}
}

// TestNothingBeforeClientAuth: a client that completed the key exchange
// with a listener requiring client certificates, but holds no accepted
// one, sends data, keep-alives and a clone under the session keys
// instead of CLIENT_AUTH. The listener hands nothing to Accept, and
// refuses the CLIENT_AUTH that finally comes.
func TestNothingBeforeClientAuth(t *testing.T) {
	srv, cli, other := testcert.Must(), testcert.Must(), testcert.Must()
	l := listen(t, &Config{Security: psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true,
		PinnedKeys: []psi.Pin{psi.PinCertificate(cli.Leaf.Leaf)}}})
	ctx := testContext(t)
	var hold atomic.Bool
	hold.Store(true)
	ct := &Transport{Conn: &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		if len(b) > 1 && wire.Opcode(b[1]) == wire.ClientAuth && hold.Load() {
			return
		}
		send(b)
	}}}
	t.Cleanup(func() { ct.Close() })
	dialed := make(chan error, 1)
	go func() {
		c, err := ct.Dial(ctx, l.Addr(), &Config{Security: psi.Security{Certificates: []tls.Certificate{other.Leaf},
			PinnedKeys: []psi.Pin{psi.PinCertificate(srv.Leaf.Leaf)}}})
		if c != nil {
			c.Close()
		}
		dialed <- err
	}()
	var c *Conn
	for c == nil {
		time.Sleep(5 * time.Millisecond)
		ct.mu.Lock()
		for _, x := range ct.conns {
			x.mu.Lock()
			if x.state == stateEstablished && x.authWait {
				c = x
			}
			x.mu.Unlock()
		}
		ct.mu.Unlock()
	}
	accepted := make(chan *Conn, 1)
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	go func() { s, _ := l.Accept(actx); accepted <- s }()
	c.mu.Lock()
	sealAs(c, wire.PureData, wire.FlagEOT|wire.FlagAckRequest, []byte("data before CLIENT_AUTH"))
	sealAs(c, wire.KeepAlive, wire.FlagAckRequest, nil)
	sealAs(c, wire.Persist, wire.FlagEOT, []byte("persist before CLIENT_AUTH"))
	clone := c.local + 7
	i2r, _ := fcrypto.TrafficSecrets(c.master, clone, c.peer)
	p := wire.Packet{Header: wire.Header{Opcode: wire.Multiply, Flags: wire.FlagEOT, PN: 1, Seq: 1, Dst: c.peer, Src: clone}}
	hdr := wire.AppendHeader(nil, &p)
	if out, err := fcrypto.NewDirection(i2r).Seal(hdr, 1, hdr, []byte("clone before CLIENT_AUTH")); err == nil {
		c.t.write(out, &c.remote)
	}
	c.mu.Unlock()
	if s := <-accepted; s != nil {
		m, _ := s.ReceiveMessage(ctx)
		t.Fatalf("the listener accepted a client before CLIENT_AUTH; it sent %q", m)
	}
	hold.Store(false) // the unpinned CLIENT_AUTH goes out on the next retry
	select {
	case err := <-dialed:
		if !errors.Is(err, post.ErrAuthentication) {
			t.Fatalf("dial: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the unpinned client was not refused")
	}
}

// TestBorrowedCertificate: a client presenting the pinned client's
// certificate, but signing with its own key, is refused at once.
func TestBorrowedCertificate(t *testing.T) {
	srv, cli, other := testcert.Must(), testcert.Must(), testcert.Must()
	l := listen(t, &Config{Security: psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true,
		PinnedKeys: []psi.Pin{psi.PinCertificate(cli.Leaf.Leaf)}}})
	ctx := testContext(t)
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	accepted := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(actx); accepted <- s }()
	borrowed := tls.Certificate{Certificate: cli.Leaf.Certificate, PrivateKey: other.Leaf.PrivateKey}
	start := time.Now()
	c, err := Dial(ctx, addrOf(l), &Config{Security: psi.Security{Certificates: []tls.Certificate{borrowed},
		PinnedKeys: []psi.Pin{psi.PinCertificate(srv.Leaf.Leaf)}}})
	if err == nil {
		c.Close()
		t.Fatal("dial with a borrowed certificate succeeded")
	}
	if !errors.Is(err, post.ErrAuthentication) || time.Since(start) > time.Second {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	if s := <-accepted; s != nil {
		t.Fatal("Accept returned the client with a borrowed certificate")
	}
	select {
	case rerr := <-l.Refused():
		t.Logf("listener: %v", rerr)
	case <-time.After(time.Second):
		t.Fatal("the listener did not report the refusal")
	}
}
