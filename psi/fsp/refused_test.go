package fsp

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// closedPort returns a loopback UDP address nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	return ap
}

// TestDialRefused dials a UDP port where nothing listens: the ICMP port
// unreachable ends the dial with post.ErrRefused instead of the handshake
// timeout (which would wrap post.ErrTimeout).
func TestDialRefused(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP errors are reported on Linux")
	}
	_, ccfg := pair(t)
	ctx := testContext(t)
	for _, name := range []string{"Dial", "Stack"} {
		addr := closedPort(t)
		start := time.Now()
		var err error
		if name == "Dial" {
			var c *Conn
			c, err = Dial(ctx, addr, ccfg)
			if c != nil {
				c.Close()
			}
		} else {
			s := &Stack{Base: ccfg}
			tr, e := s.Dial(ctx, addr, nil)
			if tr != nil {
				tr.Close()
			}
			err = e
		}
		if !errors.Is(err, post.ErrRefused) {
			t.Fatalf("%s: got %v, want an error wrapping post.ErrRefused", name, err)
		}
		var oe *post.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" {
			t.Fatalf("%s: %v is not a dial OpError", name, err)
		}
		t.Logf("%s: refused after %v: %v", name, time.Since(start), err)
	}
}

// TestICMPSoftError: once the handshake is done, an ICMP port unreachable
// (the server's socket is gone) is a SoftError event on an owned dialing
// socket, not the end of the connection.
func TestICMPSoftError(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP errors are reported on Linux")
	}
	spc, l, c := vanishingPeer(t, nil)
	ctx := testContext(t)
	defer c.Abort(nil) // its peer is gone
	evs := make(chan psi.Event, 16)
	c.SetEventHandler(func(e psi.Event) {
		select {
		case evs <- e:
		default:
		}
	})
	if err := c.SendMessage(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "hello" {
		t.Fatalf("%q, %v", m, err)
	}
	// The server vanishes without a word: its socket is closed under it.
	spc.Close()
	if err := c.SendMessage(ctx, []byte("anyone there?")); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-evs:
			if e.Kind != psi.EventSoftError || !errors.Is(e.Err, syscall.ECONNREFUSED) {
				t.Logf("event %v: %v", e.Kind, e.Err)
				continue
			}
			if e.Old.Remote != spc.LocalAddr().(*net.UDPAddr).AddrPort() {
				t.Fatalf("SoftError on path %v", e.Old)
			}
			t.Logf("SoftError: %v", e.Err)
			if err := c.Err(); err != nil {
				t.Fatalf("the connection ended on an ICMP error: %v", err)
			}
			return
		case <-timeout:
			t.Fatal("no SoftError for the ICMP port unreachable")
		}
	}
}

// TestICMPPeerGone: a peer whose socket is gone from a live host (a
// crashed process) gets a port unreachable for every packet sent to it;
// with no word from the peer across a few of them, the connection fails
// with post.ErrReset, as TCP reports a killed peer, instead of waiting
// for its idle timeout (an hour here, so only the port unreachables can
// end it).
func TestICMPPeerGone(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP errors are reported on Linux")
	}
	spc, l, c := vanishingPeer(t, func(cfg *Config) { cfg.IdleTimeout = time.Hour })
	ctx := testContext(t)
	defer c.Abort(nil)
	if err := c.SendMessage(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "hello" {
		t.Fatalf("%q, %v", m, err)
	}
	spc.Close() // the server vanishes without a word
	start := time.Now()
	if err := c.SendMessage(ctx, []byte("anyone there?")); err != nil && !errors.Is(err, post.ErrReset) {
		t.Fatal(err)
	}
	if _, err := c.ReceiveMessage(ctx); !errors.Is(err, post.ErrReset) {
		t.Fatalf("receive from a vanished peer: %v; want an error wrapping post.ErrReset", err)
	}
	t.Logf("refused after %v: %v", time.Since(start), c.Err())
}

// TestICMPForgedRefusals: port unreachables for a peer that answers (as
// forged ones would be) never end the connection: each round's probe is
// answered, which starts the count over.
func TestICMPForgedRefusals(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, _ := connect(t, l, ccfg)
	ctx := testContext(t)
	for i := range 2 * maxRefusals {
		c.mu.Lock()
		c.events.icmpAt = time.Time{} // no rate limit between the rounds
		c.icmpSoftError(syscall.ECONNREFUSED)
		refused := c.active.refused
		c.mu.Unlock()
		if err := c.Err(); err != nil {
			t.Fatalf("round %d: a forged port unreachable ended a live connection: %v", i, err)
		}
		// Wait for the peer's answer to the probe.
		for {
			c.mu.Lock()
			answered := c.lastRecv.After(refused)
			c.mu.Unlock()
			if answered {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("round %d: the peer did not answer the probe", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := c.SendMessage(ctx, []byte("still here")); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedReset: a listener that refuses a connection once keys exist
// (its budget filled during the handshake, it closed with the connection
// unaccepted) says so in the protected RESET, and the peer's calls fail
// with post.ErrRefused, not post.ErrReset.
func TestRefusedReset(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	s.teardown(post.Errorf(post.ErrRefused, "fsp: listener over its memory budget"), true)
	ctx := testContext(t)
	if _, err := c.ReceiveMessage(ctx); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("after a refusal: %v; want post.ErrRefused", err)
	}
}

// vanishingPeer starts a listener on a socket the test closes to make the
// peer vanish (spc), and dials it on a socket of the dial's own, where
// ICMP errors are heard; edit, if set, adjusts the client's config.
func vanishingPeer(t *testing.T, edit func(*Config)) (spc *net.UDPConn, l *Listener, c *Conn) {
	t.Helper()
	scfg, ccfg := pair(t)
	if edit != nil {
		edit(ccfg)
	}
	spc = mustUDP(t)
	st := &Transport{Conn: spc}
	t.Cleanup(func() { st.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, err = Dial(testContext(t), spc.LocalAddr().(*net.UDPAddr).AddrPort(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	return spc, l, c
}
