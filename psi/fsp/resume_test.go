package fsp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// waitTicket waits until cache holds a ticket for the listener at key.
func waitTicket(t testing.TB, cache tls.ClientSessionCache, c *Conn) {
	t.Helper()
	key := c.ticketCacheKey()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if cs, ok := cache.Get(key); ok && cs != nil {
			if _, st, err := cs.ResumptionState(); err == nil && st != nil && len(st.Extra) > 0 &&
				len(st.Extra[0]) == ticketMetaLen && st.Extra[0][ticketMetaLen-1] == 0 {
				return // a ticket no dial took yet
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no new resumption ticket within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// pingPong sends a message each way.
func pingPong(t testing.TB, a, b *Conn) {
	t.Helper()
	ctx := testContext(t)
	msg := []byte("hello over a resumed session")
	if err := a.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	got, err := b.ReceiveMessage(ctx)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := b.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if got, err = a.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %q, %v", got, err)
	}
}

// acceptWant accepts the next connection on l and reads want from it, in
// order. The connection is closed when the test ends.
func acceptWant(t testing.TB, ctx context.Context, l *Listener, want ...string) *Conn {
	t.Helper()
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, w := range want {
		if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != w {
			t.Fatalf("got %q, %v; want %q", m, err, w)
		}
	}
	return s
}

// noMore fails if s delivers another message within d.
func noMore(t testing.TB, ctx context.Context, s *Conn, d time.Duration) {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if m, err := s.ReceiveMessage(actx); err == nil {
		t.Fatalf("message delivered twice: %q", m)
	}
}

func TestResumption(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	scfg := &Config{Security: psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}}
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := &Config{Security: psi.Security{RootCAs: srv.Pool, ServerName: "localhost",
		Certificates: []tls.Certificate{cli.Leaf}, SessionCache: cache}}
	l := listen(t, scfg)

	c1, s1 := connect(t, l, ccfg)
	if c1.Resumed() || s1.Resumed() {
		t.Fatal("first connection reports resumption")
	}
	pingPong(t, c1, s1)
	waitTicket(t, cache, c1)
	c1.Close()

	c2, s2 := connect(t, l, ccfg)
	if !c2.Resumed() || !s2.Resumed() {
		t.Fatalf("second connection not resumed: client %v, server %v", c2.Resumed(), s2.Resumed())
	}
	pingPong(t, c2, s2)
	// Identities survive resumption.
	if pc := c2.PeerCertificates(); len(pc) == 0 || !pc[0].Equal(srv.Leaf.Leaf) {
		t.Fatal("resumed client lost the server's identity")
	}
	if pc := s2.PeerCertificates(); len(pc) == 0 || !pc[0].Equal(cli.Leaf.Leaf) {
		t.Fatal("resumed server lost the client's identity")
	}
	// A ticket is single-use, and the resumed session issues the next.
	waitTicket(t, cache, c2)
	c3, s3 := connect(t, l, ccfg)
	if !c3.Resumed() {
		t.Fatal("third connection not resumed")
	}
	pingPong(t, c3, s3)
}

// resumable returns a listener and a client configuration whose cache
// holds a ticket for it, after one full handshake.
func resumable(t *testing.T, allow0RTT bool) (*Listener, *Config, tls.ClientSessionCache) {
	t.Helper()
	scfg, ccfg := pair(t)
	scfg.Allow0RTT = allow0RTT
	cache := tls.NewLRUClientSessionCache(4)
	ccfg.Security.SessionCache = cache
	ccfg.Allow0RTT = allow0RTT
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	pingPong(t, c, s)
	waitTicket(t, cache, c)
	c.Close()
	return l, ccfg, cache
}

func TestZeroRTT(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	ctx := testContext(t)
	c, err := Dial(ctx, addrOf(l), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-c.HandshakeComplete():
		t.Fatal("a 0-RTT dial waited for the handshake")
	default:
	}
	if err := c.SendMessage(ctx, []byte("early")); err != nil {
		t.Fatal(err)
	}
	s := acceptWant(t, ctx, l, "early")
	if !s.Used0RTT() {
		t.Fatal("listener did not get the message as 0-RTT")
	}
	pingPong(t, c, s)
	if !c.Used0RTT() || !c.Resumed() {
		t.Fatalf("client: 0-RTT %v, resumed %v", c.Used0RTT(), c.Resumed())
	}
}

// gatedConn is a recConn whose reads wait until open is closed: the
// answers to what the connection sent before stay queued in the socket.
type gatedConn struct {
	*recConn
	open chan struct{}
}

func (g *gatedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	<-g.open
	return g.recConn.ReadFrom(b)
}

// restores returns the RESTOREs among pkts, parsed.
func restores(t *testing.T, pkts []wire.Packet) []*restoreRequest {
	t.Helper()
	var out []*restoreRequest
	for i := range pkts {
		if pkts[i].Opcode != wire.Restore {
			continue
		}
		req, err := parseRestore(&pkts[i])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, req)
	}
	return out
}

// TestZeroRTTReaderFirst: a 0-RTT dial whose caller reads first, waiting
// for the listener to speak, has sent RESTORE when Dial returns, so its
// handshake ends on the answer, one round trip later, and the client
// sends no other handshake packet. RESTORE waited for the first write,
// Fork or Close before, and left 250 ms after Dial for a reader.
func TestZeroRTTReaderFirst(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	h := &recConn{PacketConn: mustUDP(t)}
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	ctx := testContext(t)
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkts := h.packetsFrom(c.LocalALFID())
	if len(pkts) == 0 || pkts[0].Opcode != wire.Restore || pkts[0].Flags&restoreEarly == 0 {
		t.Fatalf("Dial returned after %d packets (%v), want RESTORE allowing 0-RTT", len(pkts), pkts)
	}
	go func() {
		if s, err := l.Accept(ctx); err == nil {
			s.SendMessage(ctx, []byte("server speaks first"))
		}
	}()
	if m, err := c.ReceiveMessage(ctx); err != nil || string(m) != "server speaks first" {
		t.Fatalf("got %q, %v", m, err)
	}
	pkts = h.packetsFrom(c.LocalALFID())
	c.mu.Lock()
	tries := c.hsTries
	c.mu.Unlock()
	// Each handshake send is RESTORE, without data; more than one only
	// if its 250 ms retransmission timer fired (a stalled host).
	for _, req := range restores(t, pkts) {
		if req.early != nil {
			t.Fatal("a RESTORE carried data nobody wrote")
		}
	}
	if n := len(restores(t, pkts)); n != tries || !c.Resumed() || !c.Used0RTT() {
		t.Fatalf("%d RESTOREs for %d handshake sends, resumed %v, 0-RTT %v", n, tries, c.Resumed(), c.Used0RTT())
	}
	t.Logf("%d packets from the client in all, the first before Dial returned; %d RESTORE", len(pkts), tries)
}

// TestZeroRTTLateFirstWrite: a 0-RTT dial's first message written after
// the handshake ended goes at once under the session keys, not in a
// RESTORE; the dial still reports 0-RTT (nothing waited), and the
// message arrives once.
func TestZeroRTTLateFirstWrite(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	h := &recConn{PacketConn: mustUDP(t)}
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	ctx := testContext(t)
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-c.HandshakeComplete() // stands for a caller, or a scheduler, slower than the round trip
	if err := c.SendMessage(ctx, []byte("late")); err != nil {
		t.Fatal(err)
	}
	s := acceptWant(t, ctx, l, "late")
	for _, req := range restores(t, h.packetsFrom(c.LocalALFID())) {
		if req.early != nil {
			t.Fatal("a message written after the handshake went in a RESTORE")
		}
	}
	if !c.Used0RTT() || !s.Used0RTT() || s.tookEarly() {
		t.Fatalf("client 0-RTT %v, listener 0-RTT %v, took a 0-RTT message %v", c.Used0RTT(), s.Used0RTT(), s.tookEarly())
	}
	pingPong(t, c, s)
	noMore(t, ctx, s, 100*time.Millisecond)
}

// TestZeroRTTFirstFlight shows that the idempotent first message of a
// 0-RTT dial written before the handshake ended travels in the client's
// second datagram, a copy of the RESTORE that left at Dial, and that
// RESTOREs are enough for Accept to return the connection with the
// message: everything else the client sends is dropped until the
// listener has read it. The listener's answers reach the
// client only then, the first of them before it took the message: the
// client sends the message again under the session keys, and it is
// still delivered once.
func TestZeroRTTFirstFlight(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	h := &gatedConn{recConn: &recConn{PacketConn: mustUDP(t)}, open: make(chan struct{})}
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	// The ticket was cached for the first client's address key; this
	// transport dials the same listener address, so the key matches.
	ctx := testContext(t)
	h.drop = func(b []byte) bool {
		var p wire.Packet
		return wire.Parse(b, &p) != nil || p.Opcode != wire.Restore
	}
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkts := h.packetsFrom(c.LocalALFID())
	if len(pkts) == 0 || len(restores(t, pkts)) != len(pkts) || restores(t, pkts)[0].early != nil {
		t.Fatalf("%d packets left before Dial returned, want RESTOREs without data", len(pkts))
	}
	msg := []byte("idempotent first message")
	if err := c.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	s := acceptWant(t, ctx, l, string(msg))
	pkts = h.packetsFrom(c.LocalALFID())
	var first, copied int
	for i := range pkts {
		if pkts[i].Opcode != wire.Restore {
			continue
		}
		req, _ := parseRestore(&pkts[i])
		if pkts[i].Dst != 0 || string(req.nonce) != string(restores(t, pkts)[0].nonce) {
			t.Fatal("RESTOREs to another ALFID, or with another nonce")
		}
		if req.early != nil && copied == 0 {
			if len(req.early) != len(msg)+fcrypto.TagLen {
				t.Fatalf("the copy carries %d sealed bytes, want the message", len(req.early))
			}
			first, copied = len(pkts[0].HeaderBytes)+len(pkts[0].Payload), len(pkts[i].HeaderBytes)+len(pkts[i].Payload)
		}
	}
	if copied == 0 {
		t.Fatal("no RESTORE carried the message")
	}
	t.Logf("RESTORE of %d bytes, then its copy of %d with the %d-byte message; %d datagrams sent in all, all but RESTOREs dropped",
		first, copied, len(msg), len(pkts))
	h.mu.Lock()
	h.drop = nil
	h.mu.Unlock()
	close(h.open)
	pingPong(t, c, s)
	if !c.Used0RTT() || !s.Used0RTT() || !s.tookEarly() {
		t.Fatal("0-RTT not reported")
	}
	noMore(t, ctx, s, 100*time.Millisecond)
}

// TestZeroRTTReplay replays a captured 0-RTT RESTORE, from the client's
// address and from another: the message is delivered once, no second
// connection is made, and each answer is smaller than the replay.
func TestZeroRTTReplay(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	h := &recConn{PacketConn: mustUDP(t)}
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	ctx := testContext(t)
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMessage(ctx, []byte("once")); err != nil {
		t.Fatal(err)
	}
	s := acceptWant(t, ctx, l, "once")
	pingPong(t, c, s)
	// Replay every RESTORE the client sent: the one that left at Dial,
	// and the copy with the message if the write came before the
	// handshake ended.
	var captured [][]byte
	h.mu.Lock()
	for _, b := range h.sent {
		var p wire.Packet
		if wire.Parse(b, &p) == nil && p.Opcode == wire.Restore {
			captured = append(captured, b)
		}
	}
	h.mu.Unlock()
	c.Close()
	s.Close()

	attacker := mustUDP(t)
	restore := captured[0]
	for _, b := range captured {
		restore = b // the largest comes last
		for _, from := range []net.PacketConn{h.PacketConn, attacker} {
			for range 3 {
				if _, err := from.WriteTo(b, l.Addr()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	attacker.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 4096)
	for {
		n, _, err := attacker.ReadFrom(buf)
		if err != nil {
			break
		}
		if n >= len(restore) {
			t.Fatalf("a %d-byte answer to a %d-byte replay", n, len(restore))
		}
		var p wire.Packet
		if wire.Parse(buf[:n], &p) == nil && p.Opcode != wire.AckInitConnect {
			t.Fatalf("replay answered with %v", p.Opcode)
		}
	}
	actx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if s2, err := l.Accept(actx); err == nil {
		m, _ := s2.ReceiveMessage(actx)
		t.Fatalf("replay made a second connection (message %q)", m)
	}
}

// TestResumeOtherIdentity: a listener with another identity at the same
// address refuses the ticket; the client falls back to a full handshake,
// sees the new identity, and its 0-RTT message arrives once, after it.
func TestResumeOtherIdentity(t *testing.T) {
	a, b := testcert.Must(), testcert.Must()
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := &Config{Allow0RTT: true, Security: psi.Security{SessionCache: cache,
		PinnedKeys: []psi.Pin{psi.PinCertificate(a.Leaf.Leaf), psi.PinCertificate(b.Leaf.Leaf)}}}
	la := listen(t, &Config{Allow0RTT: true, Security: psi.Security{Certificates: []tls.Certificate{a.Leaf}}})
	c, s := connect(t, la, ccfg)
	pingPong(t, c, s)
	waitTicket(t, cache, c)
	addr := addrOf(la)
	c.Close()
	s.Close()
	la.Close()

	var lb *Listener
	var err error
	for range 100 { // the port frees once the connections are gone
		if lb, err = Listen(addr, &Config{Allow0RTT: true, Security: psi.Security{Certificates: []tls.Certificate{b.Leaf}}}); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	ctx := testContext(t)
	c2, err := Dial(ctx, addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.SendMessage(ctx, []byte("after fallback")); err != nil {
		t.Fatal(err)
	}
	s2 := acceptWant(t, ctx, lb, "after fallback")
	pingPong(t, c2, s2)
	if c2.Resumed() || c2.Used0RTT() || s2.Used0RTT() {
		t.Fatal("another identity's listener took the ticket")
	}
	if pc := c2.PeerCertificates(); len(pc) == 0 || !pc[0].Equal(b.Leaf.Leaf) {
		t.Fatal("client does not see the new listener's identity")
	}
	noMore(t, ctx, s2, 100*time.Millisecond)
}

// TestZeroRTTOnlyIdempotent: through the psi interface, a first message
// not marked idempotent waits for the handshake even with Allow0RTT.
func TestZeroRTTOnlyIdempotent(t *testing.T) {
	for _, idem := range []bool{false, true} {
		l, ccfg, _ := resumable(t, true)
		st := &Stack{}
		ctx := testContext(t)
		tr, err := st.Dial(ctx, addrOf(l), &psi.Config{Security: ccfg.Security, Allow0RTT: true})
		if err != nil {
			t.Fatal(err)
		}
		props := &post.Properties{Idempotent: idem}
		if err := tr.WriteMessage(ctx, []byte("m"), true, &psi.WriteOptions{Properties: props}); err != nil {
			t.Fatal(err)
		}
		s := acceptWant(t, ctx, l, "m")
		c := ConnOf(tr)
		<-c.HandshakeComplete()
		// The listener accepted 0-RTT either way; only the
		// idempotent message may have gone as 0-RTT data.
		if c.Used0RTT() != idem || !s.Used0RTT() || !c.Resumed() || !idem && s.tookEarly() {
			t.Fatalf("idempotent %v: client 0-RTT %v, listener 0-RTT %v (took %v), resumed %v", idem, c.Used0RTT(), s.Used0RTT(), s.tookEarly(), c.Resumed())
		}
		tr.Close()
		s.Close()
	}
}

// TestZeroRTTDeadListener: a 0-RTT dial to a listener that is gone
// returns at once, but its message is not reported delivered: Dial
// fails if the kernel already reported the port unreachable when RESTORE
// left, and otherwise the write or Close does once that report comes or
// the handshake times out; nothing hangs.
func TestZeroRTTDeadListener(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	l.Close()
	ccfg.HandshakeTimeout = 500 * time.Millisecond
	ctx := testContext(t)
	c, err := Dial(ctx, addrOf(l), ccfg)
	if err != nil {
		t.Logf("Dial: %v", err)
		return
	}
	start := time.Now()
	if err := c.SendMessage(ctx, []byte("lost?")); err != nil {
		t.Logf("SendMessage: %v", err)
		c.Close()
		return
	}
	err = c.Close()
	if err == nil {
		t.Fatal("Close reported a message to a dead listener delivered")
	}
	t.Logf("Close: %v", err)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

// TestResumeRechecksTrust: a ticket cached by a dial that trusted the
// listener is not used by a dial, sharing the cache, that does not: it
// fails as a full handshake would.
func TestResumeRechecksTrust(t *testing.T) {
	l, ccfg, cache := resumable(t, false)
	other := &Config{Security: psi.Security{SessionCache: cache, ServerName: ccfg.Security.ServerName,
		PinnedKeys: []psi.Pin{psi.PinCertificate(testcert.Must().Leaf.Leaf)}}}
	ctx := testContext(t)
	if c, err := Dial(ctx, addrOf(l), other); err == nil {
		c.Close()
		t.Fatal("a dial that does not trust the listener resumed its session")
	}
}

// TestZeroRTTRefusedByListener: a listener without Allow0RTT resumes the
// session but does not take the 0-RTT message, which the client sends
// again after the handshake: it arrives once.
func TestZeroRTTRefusedByListener(t *testing.T) {
	l, ccfg, _ := resumable(t, false)
	ccfg.Allow0RTT = true
	ctx := testContext(t)
	c, err := Dial(ctx, addrOf(l), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"first", "second"} {
		if err := c.SendMessage(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	s := acceptWant(t, ctx, l, "first", "second")
	if !c.Resumed() || c.Used0RTT() || s.Used0RTT() {
		t.Fatalf("resumed %v, client 0-RTT %v, listener 0-RTT %v", c.Resumed(), c.Used0RTT(), s.Used0RTT())
	}
	pingPong(t, c, s)
}

// TestZeroRTTLostRestore: RESTORE and its copy with the 0-RTT message
// are both lost; the copy's retransmission delivers the message, once.
func TestZeroRTTLostRestore(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	h := &recConn{PacketConn: mustUDP(t)}
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	sent := 0
	h.drop = func([]byte) bool {
		sent++
		return sent <= 2
	}
	ctx := testContext(t)
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMessage(ctx, []byte("retried")); err != nil {
		t.Fatal(err)
	}
	s := acceptWant(t, ctx, l, "retried")
	pingPong(t, c, s)
	if !s.Used0RTT() || !c.Used0RTT() {
		t.Fatal("the retransmitted RESTORE lost its 0-RTT message")
	}
	noMore(t, ctx, s, 100*time.Millisecond)
}

// TestZeroRTTFork: a clone forked from a 0-RTT dial before its handshake
// completed waits for it, and keeps the resumed identity.
func TestZeroRTTFork(t *testing.T) {
	l, ccfg, _ := resumable(t, true)
	ctx := testContext(t)
	c, err := Dial(ctx, addrOf(l), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMessage(ctx, []byte("root")); err != nil {
		t.Fatal(err)
	}
	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := acceptWant(t, ctx, l, "root")
	if err := f.SendMessage(ctx, []byte("clone")); err != nil {
		t.Fatal(err)
	}
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if m, err := sf.ReceiveMessage(ctx); err != nil || string(m) != "clone" {
		t.Fatal(m, err)
	}
	if pc := f.PeerCertificates(); len(pc) == 0 || !pc[0].Equal(c.PeerCertificates()[0]) {
		t.Fatal("the clone of a resumed session lost the listener's identity")
	}
}

// TestResumeExpiredClientCert: a listener that asks clients for
// certificates does not resume the session of one whose certificate has
// expired since its ticket was issued; the dial then fails as a full
// handshake would. Before, the ticket let it in for up to an hour, where
// QUIC and TCP (crypto/tls) refuse it.
func TestResumeExpiredClientCert(t *testing.T) {
	ca := testcert.Must()
	// x509 validity has whole seconds: this one ends within 2 s.
	expiry := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
	cli, err := ca.IssueUntil("client", expiry)
	if err != nil {
		t.Fatal(err)
	}
	scfg := &Config{Security: psi.Security{Certificates: []tls.Certificate{ca.Leaf}, ClientAuth: true, RootCAs: ca.Pool}}
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := &Config{Security: psi.Security{RootCAs: ca.Pool, ServerName: "localhost",
		Certificates: []tls.Certificate{cli}, SessionCache: cache}}
	l := listen(t, scfg)
	c1, s1 := connect(t, l, ccfg)
	pingPong(t, c1, s1)
	waitTicket(t, cache, c1)
	c1.Close()
	time.Sleep(time.Until(expiry.Add(1100 * time.Millisecond)))

	ctx := testContext(t)
	go func() {
		if s, err := l.Accept(ctx); err == nil {
			t.Errorf("listener accepted a client whose certificate expired (resumed %v)", s.Resumed())
			s.Close()
		}
	}()
	c, err := Dial(ctx, addrOf(l), ccfg)
	if err == nil {
		resumed := c.Resumed()
		c.Close()
		t.Fatalf("a client whose certificate expired connected (resumed %v)", resumed)
	}
	if !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("dial failed with %v, want post.ErrAuthentication", err)
	}
}
