package fsp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/childproc"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

var resetPSK = []byte("fsp stateless reset test key 0123")

// TestResetListenerProcess is the listener TestRestartedListenerResets
// starts and kills: it echoes every message on every connection and
// clone. It does nothing in a normal run.
func TestResetListenerProcess(t *testing.T) {
	addr := os.Getenv("PSI_FSP_RESET_LISTEN")
	if addr == "" {
		t.Skip("run by TestRestartedListenerResets")
	}
	l, err := Listen(netip.MustParseAddrPort(addr), &Config{Security: psi.Security{PSK: resetPSK}})
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("listening", l.Addr())
	ctx := context.Background()
	var echo func(c *Conn)
	echo = func(c *Conn) {
		go func() {
			for {
				cl, err := c.AcceptFork(ctx)
				if err != nil {
					return
				}
				echo(cl)
			}
		}()
		go func() {
			for {
				m, err := c.ReceiveMessage(ctx)
				if err != nil || c.SendMessage(ctx, m) != nil {
					return
				}
			}
		}()
	}
	for {
		c, err := l.Accept(ctx)
		if err != nil {
			return
		}
		echo(c)
	}
}

// startResetListener runs TestResetListenerProcess listening on addr
// and returns its process and address.
func startResetListener(t *testing.T, addr string) (*exec.Cmd, netip.AddrPort) {
	t.Helper()
	return childproc.Listener(t, "TestResetListenerProcess", "PSI_FSP_RESET_LISTEN="+addr)
}

// echoOnce sends msg on c and reads the echo.
func echoOnce(ctx context.Context, c *Conn, msg string) error {
	if err := c.SendMessage(ctx, []byte(msg)); err != nil {
		return err
	}
	got, err := c.ReceiveMessage(ctx)
	if err == nil && string(got) != msg {
		err = fmt.Errorf("echo %q of %q", got, msg)
	}
	return err
}

// hasToken reports whether c holds its peer's reset token.
func hasToken(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resetToken != nil
}

// TestRestartedListenerResets: a listener that crashed (kill -9) and was
// started again with the same key on the same port resets the
// connections of its predecessor at their next packet (a stateless reset
// carrying the token the first listener gave), instead of leaving them
// to the idle timeout (an hour here, so only the reset can end them): the
// root, a clone the listener answered, and a clone forked after the
// restart, whose MULTIPLY goes to the root's forgotten ALFID.
func TestRestartedListenerResets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts listener processes")
	}
	ctx := testContext(t)
	first, addr := startResetListener(t, "127.0.0.1:0")
	c, err := Dial(ctx, addr, &Config{Security: psi.Security{PSK: resetPSK}, IdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort(nil)
	if err := echoOnce(ctx, c, "hello from the root"); err != nil {
		t.Fatal(err)
	}
	cl, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoOnce(ctx, cl, "hello from a clone"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the listener's reset tokens", func() bool { return hasToken(c) && hasToken(cl) })
	first.Process.Kill()
	first.Wait()
	startResetListener(t, addr.String())

	late, err := c.Fork(ctx) // the MULTIPLY goes to the root's ALFID
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var lerr error
	for lerr == nil && ctx.Err() == nil {
		lerr = echoOnce(ctx, late, "anyone there? (a new clone)")
	}
	if !errors.Is(lerr, post.ErrReset) {
		t.Fatalf("a clone forked after the restart: %v; want an error wrapping post.ErrReset", lerr)
	}
	t.Logf("new clone: %v after %v", lerr, time.Since(start))
	<-c.Done()
	if err := c.Err(); !errors.Is(err, post.ErrReset) {
		t.Fatalf("root: %v; want an error wrapping post.ErrReset", err)
	}
	start = time.Now()
	var cerr error
	for cerr == nil && ctx.Err() == nil {
		cerr = echoOnce(ctx, cl, "anyone there? (an old clone)")
	}
	if !errors.Is(cerr, post.ErrReset) {
		t.Fatalf("a clone made before the restart: %v; want an error wrapping post.ErrReset", cerr)
	}
	t.Logf("old clone: %v after %v", cerr, time.Since(start))
}

// sendStatelessReset sends c, from the socket of the listener's
// Transport t (a dialer's socket takes datagrams from its peer's address
// only), a stateless reset from the peer's ALFID carrying tok, tagged as
// the plain RESET is (a key anyone can derive without a PSK).
func sendStatelessReset(t *testing.T, lt *Transport, c *Conn, tok [wire.ResetTokenLen]byte) {
	t.Helper()
	p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: c.LocalALFID(), Src: c.RemoteALFID()}}
	b := append(wire.AppendHeader(nil, &p), tok[:]...)
	tag := fcrypto.HandshakeTag(fcrypto.HandshakeKey(nil, c.LocalALFID()), b)
	to := peerAddr{ap: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	if err := lt.write(append(b, tag[:]...), &to); err != nil {
		t.Fatal(err)
	}
}

// TestForgedStatelessReset: a RESET shaped as a stateless reset but
// without the connection's token ends nothing, whatever its tag (here
// the plain RESET's, which anyone can make without a PSK), nor does one
// to a clone the peer has not answered (it only makes the parent probe
// the peer); the token the listener gave ends the connection with
// post.ErrReset.
func TestForgedStatelessReset(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	go func() {
		for {
			m, err := s.ReceiveMessage(ctx)
			if err != nil || s.SendMessage(ctx, m) != nil {
				return
			}
		}
	}()
	if err := echoOnce(ctx, c, "hello"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the listener's reset token", func() bool { return hasToken(c) })
	real := l.t.reset.Load().token(s.LocalALFID(), c.LocalALFID(), s.events.local)
	for i := range 8 {
		forged := real
		forged[i%len(forged)] ^= 1 << (i % 8)
		sendStatelessReset(t, l.t, c, forged)
	}
	var zero [wire.ResetTokenLen]byte
	sendStatelessReset(t, l.t, c, zero)
	// A clone whose MULTIPLY was not answered yet: forged resets make
	// the root probe the live listener, which ends nothing.
	cl, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sendStatelessReset(t, l.t, cl, zero)
	if err := echoOnce(ctx, c, "still there"); err != nil {
		t.Fatalf("after forged resets: %v", err)
	}
	if err := cl.SendMessage(ctx, []byte("a clone")); err != nil {
		t.Fatalf("clone after a forged reset: %v", err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("forged resets ended the connection: %v", err)
	}
	sendStatelessReset(t, l.t, c, real)
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the reset with the token did not end the connection")
	}
	if err := c.Err(); !errors.Is(err, post.ErrReset) {
		t.Fatalf("after the token: %v; want post.ErrReset", err)
	}
	s.Abort(nil) // no linger against a peer that is gone
}

// TestStatelessResetSize: a listener answers a packet to an ALFID it
// does not know with a stateless reset only if the packet is larger
// (else with the plain RESET, never larger than the packet), carrying
// the token of that ALFID pair; and at most resetsPerAddr of them in a
// burst to one address, the rest plain.
func TestStatelessResetSize(t *testing.T) {
	scfg, _ := pair(t)
	l := listen(t, scfg)
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ask := func(n int, dst, src uint32) []byte {
		p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Dst: dst, Src: src}}
		b := append(wire.AppendHeader(nil, &p), make([]byte, n-wire.HeaderLen)...)
		if _, err := u.WriteTo(b, l.Addr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		u.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := u.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer to %d bytes: %v", n, err)
		}
		return buf[:k]
	}
	r := l.t.reset.Load()
	for n := resetLen; n <= wire.StatelessResetLen+4; n++ {
		b := ask(n, 0x123456+uint32(n), 0x654321)
		var p wire.Packet
		if err := wire.Parse(b, &p); err != nil || p.Opcode != wire.Reset || p.Dst != 0x654321 || p.Src != 0x123456+uint32(n) {
			t.Fatalf("answer to %d bytes: %v %+v", n, err, p.Header)
		}
		tok, stateless := wire.StatelessResetToken(&p)
		switch {
		case len(b) > n || n > resetLen && len(b) == n:
			t.Fatalf("a %d-byte answer to %d bytes", len(b), n)
		case stateless != (n > wire.StatelessResetLen):
			t.Fatalf("to %d bytes: stateless %v", n, stateless)
		case stateless && [wire.ResetTokenLen]byte(tok) != r.token(0x123456+uint32(n), 0x654321, netip.MustParseAddr("127.0.0.1")):
			t.Fatalf("to %d bytes: token %x is not the pair's", n, tok)
		}
	}
	stateless := 0
	start := time.Now()
	for i := range 3 * resetsPerAddr {
		b := ask(100, 0x200000+uint32(i), 0x654321)
		if len(b) == wire.StatelessResetLen {
			stateless++
		}
	}
	// The burst, plus what the bucket refilled meanwhile.
	bound := resetsPerAddr + int(time.Since(start).Seconds()*resetsPerAddr) + 1
	if stateless > bound || stateless == 0 {
		t.Fatalf("%d stateless resets in a burst of %d to one address; the bound is %d", stateless, 3*resetsPerAddr, bound)
	}
	t.Logf("%d stateless resets of %d answers in a burst (bound %d)", stateless, 3*resetsPerAddr, bound)
}

// TestResetTokenPerHost: two listeners with one key on the same socket
// address but on two hosts (a fleet sharing a certificate on
// 0.0.0.0:4433; PSK peers on the same port) derive the same reset key,
// but a token is bound to the local address the peer's packets come to:
// one asked about an ALFID pair it does not know answers with a token
// the other's peer does not take. Without the address, an attacker who
// saw a connection's ALFIDs got its token from the sibling and ended it.
func TestResetTokenPerHost(t *testing.T) {
	scfg, _ := pair(t)
	id := &scfg.Security.Certificates[0]
	local := &net.UDPAddr{IP: net.IPv4zero, Port: 4433}
	a, b := newResetKeys(id, local), newResetKeys(id, local)
	if a.key != b.key {
		t.Fatal("one key and socket address gave two reset keys; the test means the shared one")
	}
	hostA, hostB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	given := a.token(0x123456, 0x654321, hostA)
	if asked := b.token(0x123456, 0x654321, hostB); asked == given {
		t.Fatal("a sibling listener gives out the token of another host's connection")
	}
	if again := b.token(0x123456, 0x654321, hostA); again != given {
		t.Fatal("the same key, ALFIDs and address gave another token: a restart would not reset")
	}
	if b.token(0x123456, 0x654321, netip.AddrFrom16(hostA.As16())) != given {
		t.Fatal("an IPv4-mapped address gave another token than the IPv4 one")
	}
}
