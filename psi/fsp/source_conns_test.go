package fsp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
	"github.com/postsockets/postsockets/psi/psitest"
)

// waitSource waits, at most 10 s (a safety bound, not a speed check),
// until l counts want connections from addr.
func waitSource(t *testing.T, l *Listener, addr string, want int) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := l.conns.Of(a)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections counted from %s, want %d", got, addr, want)
		}
	}
}

// dialSource dials l from the loopback address from, on a socket of its
// own.
func dialSource(ctx context.Context, l *Listener, from string, cfg *Config) (*Conn, error) {
	return dialUDP(ctx, netip.AddrPortFrom(netip.MustParseAddr(from), 0), addrOf(l), cfg)
}

// TestMaxConnsPerSource runs the per-source bound every stack keeps
// (psitest.ConnsPerSource) on FSP through its psi.Stack: 4 connections
// from one address, the fifth refused with post.ErrRefused.
func TestMaxConnsPerSource(t *testing.T) {
	scfg, ccfg := pair(t)
	ctx := testContext(t)
	pl, err := (&Stack{Base: &Config{MaxConnsPerSource: 4}}).Listen(ctx, loopback, &psi.Config{Security: scfg.Security})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pl.Close() })
	l := ListenerOf(pl)
	psitest.ConnsPerSource(t, pl, 4, func(ctx context.Context, from string) (psi.Transient, error) {
		return (&Stack{}).Dial(ctx, pl.Addr(), &psi.Config{Security: ccfg.Security, Local: netip.MustParseAddrPort(from + ":0")})
	}, func(from string) int { return l.conns.Of(netip.MustParseAddr(from)) })
}

// TestMaxConnsPerSourceDefault: a listener bounds each source to 1,024
// connections by default, as psi/quic and psi/tcp do.
func TestMaxConnsPerSourceDefault(t *testing.T) {
	scfg, _ := pair(t)
	l := listen(t, scfg)
	if got := l.conns.Max(); got != 1024 {
		t.Fatalf("default bound %d, want 1024", got)
	}
}

// TestMaxConnsPerSourceQueued: connections waiting for Accept count; the
// refusal comes before any key exchange, so the refused dialer fails at
// once with ErrRefused; closing the listener uncounts those it drops, and
// the accepted one counts until it closes.
func TestMaxConnsPerSourceQueued(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.MaxConnsPerSource = 3
	l := listen(t, scfg)
	ctx := testContext(t)
	var clients []*Conn
	t.Cleanup(func() {
		for _, c := range clients {
			c.Abort(nil)
		}
	})
	for i := range 3 {
		c, err := dialSource(ctx, l, "127.0.0.2", ccfg)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitSource(t, l, "127.0.0.2", 3)
	if c, err := dialSource(ctx, l, "127.0.0.2", ccfg); !errors.Is(err, post.ErrRefused) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a fourth connection: %v, want ErrRefused", err)
	}
	// The last dial returned before its client's first protected packet
	// confirmed it at the listener.
	for deadline := time.Now().Add(10 * time.Second); l.Stats().Unaccepted != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections wait for Accept, want 2", l.Stats().Unaccepted)
		}
	}
	l.Close()
	waitSource(t, l, "127.0.0.2", 1)
	s.Close()
	waitSource(t, l, "127.0.0.2", 0)
	if n := l.conns.Sources(); n != 0 {
		t.Fatalf("%d sources counted after every connection closed", n)
	}
}

// TestMaxConnsPerSourceResumed: a resumed connection (RESTORE) counts as
// a new one does, and one past the bound is refused before the listener
// takes its ticket: the dialer fails with ErrRefused.
func TestMaxConnsPerSourceResumed(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.MaxConnsPerSource = 2
	cache := tls.NewLRUClientSessionCache(4)
	ccfg.Security.SessionCache = cache
	l := listen(t, scfg)
	c1, s1 := connect(t, l, ccfg)
	pingPong(t, c1, s1)
	waitTicket(t, cache, c1)
	c2, s2 := connect(t, l, ccfg)
	if !c2.Resumed() || !s2.Resumed() {
		t.Fatal("second connection not resumed")
	}
	pingPong(t, c2, s2)
	waitSource(t, l, "127.0.0.1", 2)
	waitTicket(t, cache, c2)
	// The third dial sends RESTORE with c2's ticket.
	if c, err := Dial(testContext(t), addrOf(l), ccfg); !errors.Is(err, post.ErrRefused) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a resumed connection past the bound: %v, want ErrRefused", err)
	}
	c1.Close()
	s1.Close()
	waitSource(t, l, "127.0.0.1", 1)
	c3, s3 := connect(t, l, ccfg)
	pingPong(t, c3, s3)
	waitSource(t, l, "127.0.0.1", 2)
	for _, c := range []*Conn{c2, s2, c3, s3} {
		c.Close()
	}
	waitSource(t, l, "127.0.0.1", 0)
}

// TestMaxConnsPerSourceHandshakeFailures: handshakes that never complete
// count while they are pending, within the bound, and every one is
// uncounted once it timed out or either end refused the other's
// credentials: nothing leaks.
func TestMaxConnsPerSourceHandshakeFailures(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.MaxConnsPerSource = 4
	scfg.HandshakeTimeout = 500 * time.Millisecond
	l := listen(t, scfg)
	go func() {
		for {
			c, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	// CONNECT_REQUESTs with valid cookies, never confirmed, from one
	// address: at most the bound is counted.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	f := newFlooder(t, netip.MustParseAddr("127.0.0.5"), l.Addr())
	var wg sync.WaitGroup
	wg.Go(func() { f.run(ctx, 0x100000) })
	most := 0
	for ctx.Err() == nil {
		most = max(most, l.conns.Of(netip.MustParseAddr("127.0.0.5")))
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	cancel()
	t.Logf("%d CONNECT_REQUESTs, at most %d counted", f.requests.Load(), most)
	if most > 4 {
		t.Fatalf("%d pending handshakes counted from one address, bound 4", most)
	}
	// The count may be 0 for a moment while CONNECT_REQUESTs wait in
	// the listener's socket buffer: wait until it has read them all.
	f.sync(t)
	waitSource(t, l, "127.0.0.5", 0)

	// A dialer that does not trust the listener refuses it; a listener
	// that requires a client certificate refuses a dialer without one.
	bad := *ccfg
	bad.Security.RootCAs = testcert.Must().Pool
	if c, err := dialSource(testContext(t), l, "127.0.0.6", &bad); err == nil {
		c.Close()
		t.Fatal("a dialer trusting another CA connected")
	}
	waitSource(t, l, "127.0.0.6", 0)
	if n := l.conns.Sources(); n != 0 {
		t.Fatalf("%d sources counted after every handshake failed (%d from 127.0.0.5)", n, l.conns.Of(netip.MustParseAddr("127.0.0.5")))
	}

	// A listener requiring a client certificate refuses a dialer with
	// another CA's.
	ca, other := testcert.Must(), testcert.Must()
	acfg, _ := pair(t)
	acfg.MaxConnsPerSource = 4
	acfg.Security.ClientAuth, acfg.Security.RootCAs = true, ca.Pool
	al := listen(t, acfg)
	wrong := *ccfg
	wrong.Security.Certificates = []tls.Certificate{other.Leaf}
	if c, err := dialSource(testContext(t), al, "127.0.0.8", &wrong); err == nil {
		c.Close()
		t.Fatal("a client the listener does not trust connected")
	}
	select {
	case err := <-al.Refused():
		if !errors.Is(err, post.ErrAuthentication) {
			t.Fatalf("the listener refused the client: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listener reported no refusal")
	}
	waitSource(t, al, "127.0.0.8", 0)
}

// TestMaxConnsPerSourceZeroRTT: a 0-RTT dial past the bound returns at
// once, before the listener answers; the refusal then fails the
// connection with ErrRefused, and its 0-RTT message is not delivered.
func TestMaxConnsPerSourceZeroRTT(t *testing.T) {
	scfg, ccfg := pair(t)
	scfg.MaxConnsPerSource = 1
	scfg.Allow0RTT, ccfg.Allow0RTT = true, true
	cache := tls.NewLRUClientSessionCache(4)
	ccfg.Security.SessionCache = cache
	l := listen(t, scfg)
	c1, s1 := connect(t, l, ccfg)
	pingPong(t, c1, s1)
	waitTicket(t, cache, c1)
	ctx := testContext(t)
	c, err := Dial(ctx, addrOf(l), ccfg)
	if err != nil {
		t.Fatalf("0-RTT dial: %v", err)
	}
	defer c.Close()
	if err := c.SendMessage(ctx, []byte("early")); err != nil && !errors.Is(err, post.ErrRefused) {
		t.Fatalf("0-RTT message: %v", err)
	}
	if _, err := c.ReceiveMessage(ctx); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("a 0-RTT connection past the bound: %v, want ErrRefused", err)
	}
	if st := l.Stats(); st.Unaccepted != 0 {
		t.Fatalf("%d connections wait for Accept, want none", st.Unaccepted)
	}
	waitSource(t, l, "127.0.0.1", 1)
}

// TestMaxConnsPerSourceRefusal: a CONNECT_REQUEST past its source's
// bound gets a RESET no larger than the request and keyed by its nonce,
// which the dialer takes for a refusal, and no ACK_CONNECT_REQ: the
// listener runs no key exchange for it.
func TestMaxConnsPerSourceRefusal(t *testing.T) {
	scfg, _ := pair(t)
	scfg.MaxConnsPerSource = 1
	l := listen(t, scfg)
	f := newFlooder(t, netip.MustParseAddr("127.0.0.7"), l.Addr())
	kp, _ := fcrypto.NewKeyPair()
	buf := make([]byte, maxHandshakeSize)
	// next returns the next datagram for alfid.
	next := func(alfid uint32) ([]byte, wire.Packet) {
		t.Helper()
		f.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, err := f.pc.Read(buf)
			if err != nil {
				t.Fatalf("no answer for %x: %v", alfid, err)
			}
			var pkt wire.Packet
			if wire.Parse(buf[:n], &pkt) == nil && pkt.Dst == alfid {
				return bytes.Clone(buf[:n]), pkt
			}
		}
	}
	// connect runs the cookie exchange and sends CONNECT_REQUEST; it
	// returns the request and the answer.
	connect := func(alfid uint32) (req, answer []byte, op wire.Opcode) {
		t.Helper()
		f.init(alfid)
		_, ack := next(alfid)
		if ack.Opcode != wire.AckInitConnect {
			t.Fatalf("answer to INIT_CONNECT: opcode %d", ack.Opcode)
		}
		p := wire.Packet{Header: wire.Header{Opcode: wire.ConnectRequest, Src: alfid},
			HasParam: true, Param: wire.ConnectParam{Window: 64}, EphemeralKey: kp.Public[:]}
		body := append(bytes.Clone(ack.Payload[:fcrypto.CookieLen]), floodNonce...)
		// Padded as a dialer pads it: the listener's answer may be as
		// large as the request.
		body = append(body, make([]byte, 1024)...)
		req = handshakePacket(nil, fcrypto.HandshakeKey(nil, alfid), &p, body)
		f.pc.WriteTo(req, f.to)
		answer, pkt := next(alfid)
		return req, answer, pkt.Opcode
	}
	if _, _, op := connect(0x200001); op != wire.AckConnectReq {
		t.Fatalf("first CONNECT_REQUEST: opcode %d, want ACK_CONNECT_REQ", op)
	}
	waitSource(t, l, "127.0.0.7", 1)
	req, answer, op := connect(0x200002)
	if op != wire.Reset {
		t.Fatalf("CONNECT_REQUEST past the bound: opcode %d, want RESET", op)
	}
	if len(answer) > len(req) {
		t.Fatalf("a %d-byte RESET to a %d-byte CONNECT_REQUEST", len(answer), len(req))
	}
	if _, ok := fcrypto.VerifyHandshakeTag(fcrypto.RefusalKey(floodNonce), answer); !ok {
		t.Fatal("the RESET is not keyed by the request's nonce: the dialer would ignore it")
	}
	if got := l.conns.Of(netip.MustParseAddr("127.0.0.7")); got != 1 {
		t.Fatalf("%d counted after a refusal, want 1", got)
	}
	t.Logf("%d-byte RESET to a %d-byte CONNECT_REQUEST", len(answer), len(req))
}
