package fsp

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// FuzzTicket decodes arbitrary ticket plaintexts: nothing may panic, and
// what decodes encodes back to the same bytes. Opening them as sealed
// tickets must fail.
func FuzzTicket(f *testing.F) {
	tk := ticket{issued: time.UnixMilli(1e12), secret: bytes.Repeat([]byte{1}, 32), chain: [][]byte{{1, 2, 3}, {4}}}
	f.Add(tk.append(nil))
	tk.chain = nil
	f.Add(tk.append(nil))
	f.Add([]byte{ticketVersion})
	f.Add([]byte{})
	var keys ticketKeys
	now := time.Now()
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, err := parseTicket(b); err == nil {
			if !bytes.Equal(got.append(nil), b) {
				t.Fatalf("ticket does not encode back: %x", b)
			}
		}
		if _, err := keys.open(b, now); err == nil {
			t.Fatal("a forged ticket opened")
		}
	})
}

// FuzzRestore feeds RESTORE bodies to a listener, tagged under the
// binder key of a genuine ticket so the fuzzer gets past the tag, and
// raw: nothing may panic, and every answer is smaller than the request.
func FuzzRestore(f *testing.F) {
	const client = 0x20000
	nc := &maxWriteConn{nullConn: nullConn{done: make(chan struct{})}}
	tr := &Transport{Conn: nc}
	scfg, _ := pair(f)
	scfg.Allow0RTT = true
	l, err := tr.Listen(scfg)
	if err != nil {
		f.Fatal(err)
	}
	defer tr.Close()
	now := time.Now()
	secret := bytes.Repeat([]byte{7}, 32)
	blob := l.tickets.seal(&ticket{issued: now, secret: secret, server: l.idDigest}, now)
	body := func(nonce byte, early []byte) []byte {
		b := bytes.Repeat([]byte{nonce}, fcrypto.NonceLen)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(len(blob)))
		b = append(b, blob...)
		return append(b, early...)
	}
	f.Add(body(1, nil), true)
	f.Add(body(2, make([]byte, 40)), true)
	f.Add(body(3, nil), false)
	f.Add([]byte{}, true)
	f.Add(body(4, nil)[:40], true)

	from := peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")}
	var pkt wire.Packet
	f.Fuzz(func(t *testing.T, payload []byte, tag bool) {
		p := wire.Packet{Header: wire.Header{Opcode: wire.Restore, Src: client}, HasParam: true, EphemeralKey: bytes.Repeat([]byte{9}, 32)}
		var b []byte
		if tag {
			b = handshakePacket(nil, fcrypto.BinderKey(secret), &p, payload)
		} else {
			b = append(wire.AppendHeader(nil, &p), payload...)
		}
		nc.max = 0
		tr.handle(b, &from, &pkt)
		tr.settle()
		if nc.max >= len(b) {
			t.Fatalf("a %d-byte answer to a %d-byte RESTORE", nc.max, len(b))
		}
	})
}

// maxWriteConn is a nullConn that remembers its largest write.
type maxWriteConn struct {
	nullConn
	max int
}

func (s *maxWriteConn) WriteTo(b []byte, a net.Addr) (int, error) {
	s.max = max(s.max, len(b))
	return len(b), nil
}

// FuzzResumedHello feeds a resuming initiator arbitrary answers to its
// RESTORE, tagged under its binder key so they get past the tag: nothing
// may panic, and none completes the handshake (the key confirmation
// needs the listener's half of the exchange).
func FuzzResumedHello(f *testing.F) {
	good := append(bytes.Repeat([]byte{1}, fcrypto.NonceLen), helloResumed|helloEarly)
	f.Add(append(good, make([]byte, fcrypto.TagLen)...), true, true)
	f.Add(good, true, false)
	f.Add([]byte{}, false, true)
	tr := &Transport{Conn: &nullConn{done: make(chan struct{})}}
	tr.init()
	defer tr.Close()
	secret := bytes.Repeat([]byte{5}, 32)
	f.Fuzz(func(t *testing.T, body []byte, param, key bool) {
		c := newConn(tr, &Config{}, true, peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")})
		c.local = 0x20000
		kp, err := fcrypto.NewKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		c.kp, c.hsKey = kp, fcrypto.HandshakeKey(nil, c.local)
		c.resume = &resumeState{blob: []byte("ticket"), secret: secret, received: time.Now()}
		c.state = stateInitiating
		p := wire.Packet{Header: wire.Header{Opcode: wire.AckConnectReq, Dst: c.local, Src: 0x30000}, HasParam: param}
		if key {
			p.EphemeralKey = bytes.Repeat([]byte{9}, fcrypto.PublicLen)
		}
		b := handshakePacket(nil, fcrypto.BinderKey(secret), &p, body)
		var pkt wire.Packet
		if wire.Parse(b, &pkt) != nil {
			return
		}
		c.mu.Lock()
		c.onHandshakeReply(b, &pkt, netip.Addr{})
		st := c.state
		c.mu.Unlock()
		if st == stateEstablished {
			t.Fatal("a forged answer completed a resumed handshake")
		}
	})
}

// FuzzNewTicket feeds an initiator arbitrary NEW_TICKET bodies, then
// takes what was cached: nothing may panic.
func FuzzNewTicket(f *testing.F) {
	f.Add(make([]byte, ticketNonceLen+ticketSealing+ticketFixed))
	f.Add([]byte{})
	tr := &Transport{Conn: &nullConn{done: make(chan struct{})}}
	tr.init()
	defer tr.Close()
	f.Fuzz(func(t *testing.T, body []byte) {
		cache := tls.NewLRUClientSessionCache(1)
		c := newConn(tr, &Config{Security: psi.Security{SessionCache: cache, InsecureSkipVerify: true}}, true,
			peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")})
		c.resBase = bytes.Repeat([]byte{3}, 32)
		c.mu.Lock()
		c.storeTicket(body)
		rs := c.takeTicket(time.Now())
		c.mu.Unlock()
		if rs != nil && !bytes.Equal(rs.blob, body[ticketNonceLen:]) {
			t.Fatal("cached ticket differs from the one received")
		}
	})
}
