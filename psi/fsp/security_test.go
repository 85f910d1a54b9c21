package fsp

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// hookConn lets a test see and rewrite every datagram written.
type hookConn struct {
	net.PacketConn
	onWrite func(b []byte, send func([]byte))
}

func (h *hookConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	h.onWrite(b, func(p []byte) { h.PacketConn.WriteTo(p, addr) })
	return len(b), nil
}

func TestTamperedPacketsDropped(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	raw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var old []byte
	var mu sync.Mutex
	hc := &hookConn{PacketConn: raw, onWrite: func(b []byte, send func([]byte)) {
		if len(b) > wire.HeaderLen && wire.Opcode(b[1]) == wire.PureData {
			switch n.Add(1) % 5 {
			case 0: // flipped bit in the ciphertext
				p := append([]byte(nil), b...)
				p[len(p)-20] ^= 0x10
				send(p)
			case 1: // flipped bit in the header (associated data)
				p := append([]byte(nil), b...)
				p[4] ^= wire.FlagEOT
				send(p)
			case 2: // truncated
				send(b[:len(b)-7])
				send(b[:wire.HeaderLen])
			case 3: // replay of an older packet
				mu.Lock()
				if old != nil {
					send(old)
				}
				old = append([]byte(nil), b...)
				mu.Unlock()
			case 4: // right header, wrong key
				p := append([]byte(nil), b[:wire.HeaderLen]...)
				p = append(p, make([]byte, len(b)-wire.HeaderLen)...)
				rand.Read(p[wire.HeaderLen:])
				send(p)
			}
		}
		send(b)
	}}
	tr := &Transport{Conn: hc}
	t.Cleanup(func() { tr.Close(); raw.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, tr, l, ccfg)
	for i := range 20 {
		msg := randBytes(20000 + i*1000)
		go c.SendMessage(ctx, msg)
		got, err := s.ReceiveMessage(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	st := s.Stats()
	if st.PacketsDropped < 50 {
		t.Fatalf("only %d packets dropped: %+v", st.PacketsDropped, st)
	}
	if s.Err() != nil || c.Err() != nil {
		t.Fatal("connection did not survive")
	}
	t.Logf("server stats %+v", st)
}

func TestInitFloodKeepsNoState(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	const socks, per = 50, 20
	replies := make(chan int, socks)
	for range socks {
		go func() {
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				replies <- 0
				return
			}
			defer pc.Close()
			for i := range per {
				alfid := uint32(0x10000 + i)
				p := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: alfid}}
				pkt := handshakePacket(nil, fcrypto.HandshakeKey(nil, alfid), &p, randBytes(fcrypto.NonceLen))
				pc.WriteTo(pkt, l.Addr())
				// A CONNECT_REQUEST with a forged cookie must not create
				// state either.
				p = wire.Packet{Header: wire.Header{Opcode: wire.ConnectRequest, Src: alfid},
					HasParam: true, EphemeralKey: randBytes(32)}
				pc.WriteTo(handshakePacket(nil, fcrypto.HandshakeKey(nil, alfid), &p, randBytes(fcrypto.CookieLen+fcrypto.NonceLen)), l.Addr())
			}
			got := 0
			buf := make([]byte, 2048)
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			for got < per {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					break
				}
				if n > 1 && wire.Opcode(buf[1]) == wire.AckInitConnect {
					got++
				}
			}
			replies <- got
		}()
	}
	total := 0
	for range socks {
		total += <-replies
	}
	if total < socks*per/2 {
		t.Fatalf("listener answered only %d of %d INIT_CONNECTs", total, socks*per)
	}
	if p, n := l.Transport().PendingHandshakes(), l.Transport().NumConns(); p != 0 || n != 0 {
		t.Fatalf("flood left state: %d pending, %d connections", p, n)
	}
	// The listener still serves real clients.
	c, _ := connect(t, l, ccfg)
	if err := c.SendMessage(testContext(t), []byte("hi")); err != nil {
		t.Fatal(err)
	}
}

func TestAuthentication(t *testing.T) {
	p := testcert.Must()
	scfg := &Config{Security: psi.Security{Certificates: []tls.Certificate{p.Leaf}}}
	l := listen(t, scfg)
	ctx := testContext(t)
	go func() {
		for {
			c, err := l.Accept(ctx)
			if err != nil {
				return
			}
			go c.Close()
		}
	}()
	dial := func(sec psi.Security) error {
		c, err := Dial(ctx, addrOf(l), &Config{Security: sec, HandshakeTimeout: 2 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(psi.Security{PinnedKeys: []psi.Pin{{1, 2, 3}}}); !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("wrong pin: %v", err)
	}
	if err := dial(psi.Security{}); !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("untrusted CA: %v", err)
	}
	if err := dial(psi.Security{RootCAs: p.Pool, ServerName: "other.example"}); !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("wrong name: %v", err)
	}
	if err := dial(psi.Security{PinnedKeys: []psi.Pin{psi.PinCertificate(p.Leaf.Leaf)}}); err != nil {
		t.Fatalf("right pin: %v", err)
	}
	if err := dial(psi.Security{RootCAs: p.Pool, ServerName: "localhost"}); err != nil {
		t.Fatalf("CA: %v", err)
	}
}

func TestPSK(t *testing.T) {
	psk := []byte("0123456789abcdef0123456789abcdef")
	l := listen(t, &Config{Security: psi.Security{PSK: psk}})
	c, s := connect(t, l, &Config{Security: psi.Security{PSK: psk}})
	ctx := testContext(t)
	go c.SendMessage(ctx, []byte("psk"))
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "psk" {
		t.Fatal(m, err)
	}
	// A wrong PSK cannot even start a handshake: the listener refuses its
	// INIT_CONNECT with a RESET the client can tell is meant for it.
	_, err := Dial(ctx, addrOf(l), &Config{Security: psi.Security{PSK: []byte("fedcba9876543210fedcba9876543210")}})
	if !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("wrong PSK: %v", err)
	}
}

// TestZeroConfig: without trust settings neither end starts, and the
// error says what to configure.
func TestZeroConfig(t *testing.T) {
	for _, cfg := range []*Config{nil, {}} {
		_, err := Listen(loopback, cfg)
		if !errors.Is(err, post.ErrAuthentication) || !strings.Contains(err.Error(), "Security.Certificates") {
			t.Fatalf("listen: %v", err)
		}
	}
	scfg, _ := pair(t)
	l := listen(t, scfg)
	for _, cfg := range []*Config{nil, {}} {
		start := time.Now()
		_, err := Dial(testContext(t), addrOf(l), cfg)
		if !errors.Is(err, post.ErrAuthentication) || !strings.Contains(err.Error(), "Security.PSK") {
			t.Fatalf("dial: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("dial failed after %v", d)
		}
	}
	// InsecureSkipVerify is enough for a dialer, if a test wants it.
	c, s := connect(t, l, &Config{Security: psi.Security{InsecureSkipVerify: true}})
	ctx := testContext(t)
	go s.SendMessage(ctx, []byte("zero"))
	if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "zero" {
		t.Fatal(m, err)
	}
}

func TestInstallKey(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	key := randBytes(32)
	// The upper layer agrees on a key, both ends install it, and traffic
	// continues under it.
	if err := c.InstallKey(key); err != nil {
		t.Fatal(err)
	}
	if err := s.InstallKey(key); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		msg := randBytes(100000)
		go c.SendMessage(ctx, msg)
		got, err := s.ReceiveMessage(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatal(err)
		}
		go s.SendMessage(ctx, msg)
		if got, err = c.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
			t.Fatal(err)
		}
	}
}

func TestRefused(t *testing.T) {
	// A transport whose listener closed refuses with RESET.
	lt := &Transport{Conn: mustUDP(t)}
	scfg, ccfg := pair(t)
	l2, err := lt.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
	t.Cleanup(func() { lt.Close() })
	ccfg.HandshakeTimeout = 5 * time.Second
	_, err = Dial(testContext(t), lt.Conn.LocalAddr().(*net.UDPAddr).AddrPort(), ccfg)
	if !errors.Is(err, post.ErrRefused) {
		t.Fatalf("want ErrRefused, got %v", err)
	}
}

func mustUDP(t *testing.T) *net.UDPConn {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func TestPeerDeadTimeout(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.IdleTimeout, ccfg.IdleTimeout = time.Second, time.Second
	spc, _ := netem.Listen("udp4", "127.0.0.1:0", netem.Config{})
	cpc, _ := netem.Listen("udp4", "127.0.0.1:0", netem.Config{})
	st, ct := &Transport{Conn: spc}, &Transport{Conn: cpc}
	t.Cleanup(func() { ct.Close(); st.Close(); cpc.Close(); spc.Close() })
	l, _ := st.Listen(scfg)
	ctx := testContext(t)
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := ct.Dial(ctx, spc.LocalAddr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	// Keep-alives hold an idle connection open past the idle timeout.
	time.Sleep(1500 * time.Millisecond)
	if c.Err() != nil || s.Err() != nil {
		t.Fatalf("idle connection died despite keep-alives: %v %v", c.Err(), s.Err())
	}
	spc.SetBlackhole(true)
	cpc.SetBlackhole(true)
	go c.SendMessage(ctx, randBytes(10000))
	if _, _, err := c.ReadMessage(ctx, make([]byte, 10)); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("client: %v", err)
	}
	if _, _, err := s.ReadMessage(ctx, make([]byte, 10)); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("server: %v", err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		scfg, ccfg := pair(t)
		l, err := Listen(loopback, scfg)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ctx := testContext(t)
		for range 5 {
			acc := make(chan *Conn, 1)
			go func() { s, _ := l.Accept(ctx); acc <- s }()
			c, err := Dial(ctx, addrOf(l), ccfg)
			if err != nil {
				t.Fatal(err)
			}
			s := <-acc
			go c.SendMessage(ctx, randBytes(300000))
			if _, err := s.ReceiveMessage(ctx); err != nil {
				t.Fatal(err)
			}
			c.Close()
			s.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var fsp []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "psi/fsp.") {
				fsp = append(fsp, g)
			}
		}
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, strings.Join(fsp, "\n\n"))
	}
}

// dropFirst returns a write hook that drops the first datagram of each
// listed opcode.
func dropFirst(ops ...wire.Opcode) func(b []byte, send func([]byte)) {
	var mu sync.Mutex
	pending := map[wire.Opcode]bool{}
	for _, op := range ops {
		pending[op] = true
	}
	return func(b []byte, send func([]byte)) {
		if len(b) < 2 {
			send(b)
			return
		}
		op := wire.Opcode(b[1])
		mu.Lock()
		drop := pending[op]
		delete(pending, op)
		mu.Unlock()
		if !drop {
			send(b)
		}
	}
}

func TestHandshakeLoss(t *testing.T) {
	scfg, ccfg := pair(t)
	spc, cpc := mustUDP(t), mustUDP(t)
	st := &Transport{Conn: &hookConn{PacketConn: spc, onWrite: dropFirst(wire.AckInitConnect, wire.AckConnectReq)}}
	ct := &Transport{Conn: &hookConn{PacketConn: cpc, onWrite: dropFirst(wire.InitConnect, wire.ConnectRequest, wire.KeepAlive)}}
	t.Cleanup(func() { ct.Close(); st.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := ct.Dial(ctx, spc.LocalAddr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	// The first confirmation was dropped: the responder still learns of
	// the connection from the retried one, before any data flows.
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	go s.SendMessage(ctx, []byte("late but there"))
	if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "late but there" {
		t.Fatal(m, err)
	}
	if n := st.PendingHandshakes(); n != 0 {
		t.Fatalf("%d handshakes still pending", n)
	}
}

func TestCloseVanishedPeer(t *testing.T) {
	scfg, ccfg := pair(t)
	spc, _ := netem.Listen("udp4", "127.0.0.1:0", netem.Config{})
	cpc, _ := netem.Listen("udp4", "127.0.0.1:0", netem.Config{})
	st, ct := &Transport{Conn: spc}, &Transport{Conn: cpc}
	t.Cleanup(func() { ct.Close(); st.Close(); cpc.Close(); spc.Close() })
	l, _ := st.Listen(scfg)
	ctx := testContext(t)
	go l.Accept(ctx)
	c, err := ct.Dial(ctx, spc.LocalAddr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	cpc.SetBlackhole(true)
	c.SendMessage(ctx, randBytes(100000))
	// Close must return within its linger (not the default 30 s idle
	// timeout) though nothing it sends arrives, and say it failed.
	start := time.Now()
	if err := c.Close(); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("close against a vanished peer: %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("close took %v, linger is 3 s", d)
	}
	if err := c.Close(); err == nil {
		t.Fatal("second close after a failed one returned nil")
	}
	if _, _, err := c.ReadMessage(ctx, nil); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}
