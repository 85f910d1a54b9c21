package fsp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// nullConn is a PacketConn that discards writes and never delivers
// anything: the fuzz test feeds the transport directly.
type nullConn struct {
	once sync.Once
	done chan struct{}
}

func (n *nullConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-n.done
	return 0, nil, net.ErrClosed
}
func (n *nullConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }
func (n *nullConn) Close() error                              { n.once.Do(func() { close(n.done) }); return nil }
func (n *nullConn) LocalAddr() net.Addr                       { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (n *nullConn) SetDeadline(time.Time) error               { return nil }
func (n *nullConn) SetReadDeadline(time.Time) error           { n.Close(); return nil }
func (n *nullConn) SetWriteDeadline(time.Time) error          { return nil }

// FuzzTransportInput feeds arbitrary datagrams to a transport with a
// listener and an established connection: nothing may panic, and the
// connection must survive.
func FuzzTransportInput(f *testing.F) {
	const peer = 0x20000
	f.Add([]byte{})
	p := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: peer}}
	f.Add(handshakePacket(nil, fcrypto.HandshakeKey(nil, peer), &p, make([]byte, 32)))
	f.Add(handshakePacket(nil, fcrypto.HandshakeKey([]byte("another key"), peer), &p, make([]byte, 32))) // refused
	p = wire.Packet{Header: wire.Header{Opcode: wire.ConnectRequest, Src: peer}, HasParam: true, EphemeralKey: make([]byte, 32)}
	f.Add(handshakePacket(nil, fcrypto.HandshakeKey(nil, peer), &p, make([]byte, 56)))
	for _, op := range []wire.Opcode{wire.PureData, wire.KeepAlive, wire.Multiply, wire.Reset, wire.Release, wire.AckConnectReq, wire.ClientAuth} {
		p = wire.Packet{Header: wire.Header{Opcode: op, Dst: 0x30000, Src: peer, Seq: 1}, HasSNACK: true,
			SNACK: wire.SNACK{Gaps: []wire.Gap{{Gap: 1, Data: 1}}}}
		f.Add(append(wire.AppendHeader(nil, &p), make([]byte, 40)...))
		p.Src = peer + 1
		f.Add(append(wire.AppendHeader(nil, &p), make([]byte, 40)...))
	}
	// An aborted message: EOT with ABORT and no payload, and ABORT alone
	// (malformed).
	for _, fl := range []uint8{wire.FlagEOT | wire.FlagAbort, wire.FlagAbort} {
		p = wire.Packet{Header: wire.Header{Opcode: wire.PureData, Flags: fl, Dst: 0x30000, Src: peer, Seq: 2}}
		f.Add(append(wire.AppendHeader(nil, &p), make([]byte, 16)...))
	}
	p = wire.Packet{Header: wire.Header{Opcode: wire.KeepAlive, Dst: 0x30000, Src: peer}, HasCredit: true, Credit: 1 << 31}
	f.Add(append(wire.AppendHeader(nil, &p), make([]byte, 16)...))
	f.Add([]byte{0x40, 1, 2, 3}) // QUIC-looking
	// Stateless resets with a token that is not the connection's, and to
	// ALFIDs nobody holds (the listener answers with its own).
	p = wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: 0x30000, Src: peer}}
	f.Add(append(wire.AppendHeader(nil, &p), make([]byte, wire.ResetTokenLen+wire.StatelessResetTag)...))
	p = wire.Packet{Header: wire.Header{Opcode: wire.PureData, Flags: wire.FlagTokenRequest, Dst: 0x40000, Src: peer}}
	f.Add(append(wire.AppendHeader(nil, &p), make([]byte, 100)...))

	t := &Transport{Conn: &nullConn{done: make(chan struct{})}}
	scfg, _ := pair(f)
	l, err := t.Listen(scfg)
	if err != nil {
		f.Fatal(err)
	}
	defer t.Close()
	_ = l
	// An established connection with known keys, ALFID 0x30000.
	c := newConn(t, &Config{IdleTimeout: 24 * time.Hour, KeepAlive: -1}, false, peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")})
	c.local, c.peer, c.peerKnown = 0x30000, peer, true
	t.mu.Lock()
	t.conns[c.local] = c
	t.mu.Unlock()
	c.master = make([]byte, 32)
	c.installKeys()
	c.mu.Lock()
	c.establish(time.Now())
	// It holds a reset token the fuzzer does not know (conn_reset.go).
	c.resetToken = &[wire.ResetTokenLen]byte{1, 2, 3}
	c.mu.Unlock()

	from := peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")}
	var pkt wire.Packet
	f.Fuzz(func(tt *testing.T, b []byte) {
		t.handle(b, &from, &pkt)
		t.settle()
		t.foreign.drain()
		if c.Err() != nil {
			// Only an authenticated RESET may end the connection, and
			// the fuzzer cannot forge one.
			tt.Fatalf("connection died: %v", c.Err())
		}
	})
}

// FuzzClientAuth feeds arbitrary CLIENT_AUTH bodies to a responder that
// requires a client certificate: nothing may panic, none may pass (the
// chain check is off, so only the signature over the transcript stands),
// and each refusal wraps a post sentinel.
func FuzzClientAuth(f *testing.F) {
	cli := testcert.Must()
	ones := bytes.Repeat([]byte{1}, 32)
	sig, err := signTranscript(cli.Leaf.PrivateKey, clientTranscript(ones, cli.Leaf.Certificate))
	if err != nil {
		f.Fatal(err)
	}
	good, _ := wire.AppendCredential(nil, &wire.Credential{Chain: cli.Leaf.Certificate, Sig: sig})
	f.Add(good) // signed over another transcript
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0})
	f.Add(append(good, 0))

	t := &Transport{Conn: &nullConn{done: make(chan struct{})}}
	t.init()
	defer t.Close()
	cfg := &Config{Security: psi.Security{ClientAuth: true, InsecureSkipVerify: true}}
	digest := bytes.Repeat([]byte{2}, 32)
	pkt := &wire.Packet{Header: wire.Header{Opcode: wire.ClientAuth}}
	f.Fuzz(func(tt *testing.T, body []byte) {
		c := newConn(t, cfg, false, peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")})
		c.state, c.clientDigest = stateAffirming, digest
		c.mu.Lock()
		ok := c.affirm(pkt, body)
		c.mu.Unlock()
		if ok {
			tt.Fatal("a forged CLIENT_AUTH passed")
		}
		if err := c.Err(); !errors.Is(err, post.ErrAuthentication) && !errors.Is(err, post.ErrMalformed) {
			tt.Fatalf("refusal error %v", err)
		}
	})
}
