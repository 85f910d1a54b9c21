package carrier_test

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// remoteVia returns l's Remote with the given stacks' ports pointed at
// other addresses (relays, counting sockets).
func remoteVia(l *carrier.Listener, ports map[string]uint16) post.Remote {
	r := l.Remote("127.0.0.1")
	for k, v := range ports {
		r.Ports[k] = v
	}
	return r
}

// TestRaceUDPBlockedFallsBackToTCP blackholes UDP with the emulator; the
// race falls back to TCP one attempt delay after the first UDP attempt.
func TestRaceUDPBlockedFallsBackToTCP(t *testing.T) {
	l := listen(t, serverConfig())
	ctx := ctxT(t)
	udpStacks := map[string]uint16{}
	for name, a := range l.Addrs() {
		if name == "tcp" {
			continue
		}
		relay, err := netem.NewRelay(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Port()), netem.Config{Blackhole: true}, netem.Config{Blackhole: true})
		if err != nil {
			t.Fatal(err)
		}
		defer relay.Close()
		udpStacks[name] = relay.Addr().Port()
	}
	cfg := clientConfig()
	const delay = 100 * time.Millisecond
	cfg.Policy.AttemptDelay = delay
	start := time.Now()
	c, err := carrier.Initiate(ctx, remoteVia(l, udpStacks), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	took := time.Since(start)
	w, _ := c.Association().Winner()
	t.Logf("fell back to %s after %v and %d attempts", w.Stack, took, w.Attempts)
	if c.Stack() != "tcp" || w.Attempts != 2 {
		t.Fatalf("winner %s after %d attempts, want tcp as the second attempt", c.Stack(), w.Attempts)
	}
	if took < delay {
		t.Fatalf("tcp won after %v, before the attempt delay", took)
	}
	// The next Initiate on the same Association goes straight to TCP: it
	// is the first candidate. (The attempts are not counted: a TCP
	// handshake that a loaded host held past the 100 ms delay let the
	// blackholed stacks start too, 1 of 6 runs under -race.)
	if cands, err := c.Association().Candidates(ctx); err != nil || cands[0].Stack.Name() != "tcp" {
		t.Fatalf("next race's candidates %v, %v; want tcp first", cands, err)
	}
	cfg.Association = c.Association()
	c2, err := carrier.Initiate(ctx, post.Remote{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if w, _ := c2.Association().Winner(); c2.Stack() != "tcp" {
		t.Fatalf("second race: %s after %d attempts", c2.Stack(), w.Attempts)
	}
}

// TestRacePreferredPortClosed: the first stack's port is closed (ICMP
// unreachable), so the next stack starts at once and wins.
func TestRacePreferredPortClosed(t *testing.T) {
	l := listen(t, serverConfig())
	ctx := ctxT(t)
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	deadPort := uint16(dead.LocalAddr().(*net.UDPAddr).Port)
	dead.Close()
	cfg := clientConfig()
	cfg.Policy.AttemptDelay = 10 * time.Second // only a failure can move on
	first := carrier.DefaultStacks()[0].Name()
	c, err := carrier.Initiate(ctx, remoteVia(l, map[string]uint16{first: deadPort}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Stack() == first {
		t.Fatalf("%s won on a closed port", first)
	}
	w, _ := c.Association().Winner()
	t.Logf("%s closed; %s won after %d attempts", first, w.Stack, w.Attempts)
}

// TestRaceProhibitedNeverAttempted points every UDP stack at a socket that
// counts packets; with UDP stacks prohibited, none arrives.
func TestRaceProhibitedNeverAttempted(t *testing.T) {
	l := listen(t, serverConfig())
	ctx := ctxT(t)
	counter, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer counter.Close()
	var packets atomic.Int32
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := counter.ReadFrom(buf); err != nil {
				return
			}
			packets.Add(1)
		}
	}()
	port := uint16(counter.LocalAddr().(*net.UDPAddr).Port)
	ports := map[string]uint16{}
	cfg := clientConfig()
	for _, s := range carrier.DefaultStacks() {
		if s.Name() != "tcp" {
			ports[s.Name()] = port
			cfg.Policy.Stack(s.Name(), policy.Prohibit)
		}
	}
	for range 3 {
		c, err := carrier.Initiate(ctx, remoteVia(l, ports), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c.Stack() != "tcp" {
			t.Fatalf("winner %s", c.Stack())
		}
		c.Close()
	}
	time.Sleep(50 * time.Millisecond)
	if n := packets.Load(); n != 0 {
		t.Fatalf("%d packets reached a prohibited stack's port", n)
	}
}

// TestRaceLosersLeaveNothing races UDP stacks that hang against TCP and
// checks that no goroutine outlives the Carriers, listener and relay.
func TestRaceLosersLeaveNothing(t *testing.T) {
	checkLeaks(t)
	l := listen(t, serverConfig())
	ctx := ctxT(t)
	relay, err := netem.NewRelay(netip.MustParseAddrPort("127.0.0.1:9"), netem.Config{Blackhole: true}, netem.Config{Blackhole: true})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	ports := map[string]uint16{}
	for _, s := range carrier.DefaultStacks() {
		if s.Name() != "tcp" {
			ports[s.Name()] = relay.Addr().Port()
		}
	}
	cfg := clientConfig()
	cfg.Policy.AttemptDelay = 10 * time.Millisecond
	for range 3 {
		c, err := carrier.Initiate(ctx, remoteVia(l, ports), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c.Stack() != "tcp" {
			t.Fatalf("winner %s", c.Stack())
		}
		c.Close()
	}
}

// TestListenSharesPort: every stack listens on one port number (FSP and
// QUIC share one UDP socket), so "host:port" reaches each of them.
func TestListenSharesPort(t *testing.T) {
	l := listen(t, serverConfig())
	ctx := ctxT(t)
	port := l.Addr().Port()
	for name, a := range l.Addrs() {
		if a.Port() != port {
			t.Fatalf("%s listens on port %d, not %d", name, a.Port(), port)
		}
	}
	for _, st := range benchStacks {
		cfg := clientConfig()
		cfg.Policy.Stack(st, policy.Require)
		c, err := carrier.Initiate(ctx, post.RemoteName(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()), cfg)
		if err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		c.Send(ctx, []byte(st))
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Receive(ctx)
		if err != nil || string(m.Content) != st || s.Stack() != st {
			t.Fatalf("%s: %v %v on %s", st, err, m, s.Stack())
		}
		c.Close()
		s.Close()
	}
}
