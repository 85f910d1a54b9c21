package ice

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/leakcheck"
	"github.com/postsockets/postsockets/post"
)

// loopbackConfig gathers only 127.0.0.1 host candidates.
func loopbackConfig() Config {
	return Config{
		NetworkTypes:    []string{UDP4},
		IncludeLoopback: true,
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() },
	}
}

// checkGoroutines fails t if goroutines started during the test are still
// running shortly after it ends.
func checkGoroutines(t *testing.T) { leakcheck.Check(t) }

type peer struct {
	agent *Agent
	cands []string
	ufrag string
	pwd   string
}

func newPeer(t *testing.T, ctx context.Context, cfg Config) *peer {
	t.Helper()
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	cands, err := a.Gather(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u, p, err := a.LocalCredentials()
	if err != nil {
		t.Fatal(err)
	}
	return &peer{agent: a, cands: cands, ufrag: u, pwd: p}
}

// connectPair runs ICE between two loopback agents.
func connectPair(t *testing.T, ctx context.Context) (*peer, *peer, *PacketConn, *PacketConn) {
	t.Helper()
	a, b := newPeer(t, ctx, loopbackConfig()), newPeer(t, ctx, loopbackConfig())
	if err := a.agent.AddRemote(b.ufrag, b.pwd, b.cands); err != nil {
		t.Fatal(err)
	}
	if err := b.agent.AddRemote(a.ufrag, a.pwd, a.cands); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		cb   *PacketConn
		errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cb, errB = b.agent.Connect(ctx, false)
	}()
	ca, errA := a.agent.Connect(ctx, true)
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("connect: %v / %v", errA, errB)
	}
	return a, b, ca, cb
}

func TestLoopbackDatagrams(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, ca, cb := connectPair(t, ctx)

	l, r, ok := a.agent.Selected()
	if !ok || l.Type != Host || r.Type != Host || !l.Addr.Addr().IsLoopback() {
		t.Fatalf("selected pair %v -> %v (%v)", l, r, ok)
	}
	if got := cb.RemoteAddr().String(); got != l.Addr.String() {
		t.Errorf("b sees remote %s, a's local candidate is %s", got, l.Addr)
	}

	// Both directions, several sizes, in order on loopback.
	buf := make([]byte, 2000)
	for i, size := range []int{1, 100, 1200, 1400} {
		msg := bytes.Repeat([]byte{byte(i + 1)}, size)
		if _, err := ca.WriteTo(msg, nil); err != nil {
			t.Fatal(err)
		}
		n, addr, err := cb.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) || addr == nil {
			t.Fatalf("b read %d bytes from %v, err %v", n, addr, err)
		}
		if _, err := cb.WriteTo(msg, addr); err != nil {
			t.Fatal(err)
		}
		n, _, err = ca.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("a read %d bytes, err %v", n, err)
		}
	}
	if ca.BytesSent() == 0 || cb.BytesReceived() != ca.BytesSent() {
		t.Errorf("byte counters: a sent %d, b received %d", ca.BytesSent(), cb.BytesReceived())
	}

	// Short buffer truncates.
	if _, err := ca.WriteTo([]byte("truncate me"), nil); err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 4)
	if n, _, err := cb.ReadFrom(small); err != nil || string(small[:n]) != "trun" {
		t.Fatalf("truncated read %q, %v", small[:n], err)
	}
	_ = b
}

func TestDeadlineAndClose(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, ca, cb := connectPair(t, ctx)

	// A past read deadline fails at once with an error that matches both
	// the standard library's and post's sentinels.
	cb.SetReadDeadline(time.Now().Add(-time.Second))
	_, _, err := cb.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, post.ErrTimeout) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: %v", err)
	}
	// A future deadline fires while blocked.
	cb.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := cb.ReadFrom(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with deadline: %v", err)
	}
	// Clearing the deadline makes reads work again.
	cb.SetReadDeadline(time.Time{})
	if _, err := ca.WriteTo([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if n, _, err := cb.ReadFrom(make([]byte, 10)); err != nil || n != 1 {
		t.Fatalf("read after clearing deadline: %d, %v", n, err)
	}
	cb.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := cb.WriteTo([]byte("x"), nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past deadline: %v", err)
	}

	// Close unblocks a pending read.
	done := make(chan error, 1)
	go func() {
		_, _, err := ca.ReadFrom(make([]byte, 10))
		done <- err
	}()
	ca.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) || !errors.Is(err, post.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := ca.WriteTo([]byte("x"), nil); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	cb.Close()
}

func TestConnectFails(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := loopbackConfig()
	cfg.DisconnectedTimeout = 200 * time.Millisecond
	cfg.FailedTimeout = 300 * time.Millisecond
	a := newPeer(t, ctx, cfg)
	// A peer candidate on a port nobody answers.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cand := "candidate:1 1 udp 2130706431 127.0.0.1 " + strconv.Itoa(port) + " typ host"
	if err := a.agent.AddRemote("abcd", "abcdefghijklmnopqrstuvwxyz", []string{cand}); err != nil {
		t.Fatal(err)
	}
	_, err = a.agent.Connect(ctx, true)
	if !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("connect to nobody: %v", err)
	}
	if _, err := a.agent.Connect(ctx, true); err == nil {
		t.Fatal("second Connect succeeded")
	}
}

func TestConnectContext(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newPeer(t, ctx, loopbackConfig())
	b := newPeer(t, ctx, loopbackConfig())
	if err := a.agent.AddRemote(b.ufrag, b.pwd, b.cands); err != nil {
		t.Fatal(err)
	}
	// b never runs checks, so a cannot finish before its context ends.
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	_, err := a.agent.Connect(short, false)
	if !errors.Is(err, post.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connect with expiring context: %v", err)
	}
}

func TestAddRemoteRejects(t *testing.T) {
	checkGoroutines(t)
	a, err := NewAgent(loopbackConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	good := "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"
	for _, tc := range []struct {
		ufrag, pwd string
		cands      []string
		want       error
	}{
		{"", "abcdefghijklmnopqrstuvwxyz", []string{good}, post.ErrMalformed},
		{"abcd", "short", []string{good}, post.ErrMalformed},
		{"ab d", "abcdefghijklmnopqrstuvwxyz", []string{good}, post.ErrMalformed},
		{"abcd", "abcdefghijklmnopqrstuvwxyz", []string{"candidate:garbage"}, post.ErrMalformed},
		{"abcd", "abcdefghijklmnopqrstuvwxyz", nil, post.ErrNoCandidates},
		{"abcd", "abcdefghijklmnopqrstuvwxyz", make([]string, MaxCandidates+1), post.ErrMalformed},
		{"abcd", "abcdefghijklmnopqrstuvwxyz", []string{"candidate:1 1 tcp 2130706431 127.0.0.1 5000 typ host tcptype passive"}, post.ErrNoCandidates},
	} {
		if err := a.AddRemote(tc.ufrag, tc.pwd, tc.cands); !errors.Is(err, tc.want) {
			t.Errorf("AddRemote(%q, %q, %.40q) = %v, want %v", tc.ufrag, tc.pwd, tc.cands, err, tc.want)
		}
	}
	if _, err := a.Connect(context.Background(), true); !errors.Is(err, post.ErrNoCandidates) {
		t.Errorf("connect without remote: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{NetworkTypes: []string{"sctp"}},
		{STUN: []string{"http://example.com"}},
		{STUN: []string{"turn:example.com:3478"}},
		{TURN: []TURNServer{{URL: "stun:example.com:3478"}}},
		{CandidateTypes: []CandidateType{PeerReflexive}},
	} {
		if a, err := NewAgent(cfg); err == nil {
			a.Close()
			t.Errorf("NewAgent(%+v) succeeded", cfg)
		}
	}
	// Servers that the candidate types do not need are ignored.
	a, err := NewAgent(Config{STUN: []string{"stun:192.0.2.1:3478"}, CandidateTypes: []CandidateType{Host}})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
}

func TestGatherAfterClose(t *testing.T) {
	checkGoroutines(t)
	a, err := NewAgent(loopbackConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if _, err := a.Gather(context.Background()); !errors.Is(err, post.ErrClosed) {
		t.Fatalf("gather after close: %v", err)
	}
	a.Close() // idempotent
}

func TestParseCandidate(t *testing.T) {
	ci, err := ParseCandidate("candidate:1 1 udp 1694498815 192.0.2.7 40000 typ srflx raddr 10.0.0.2 rport 5000")
	if err != nil {
		t.Fatal(err)
	}
	want := CandidateInfo{Type: ServerReflexive, Network: "udp4",
		Addr: netip.MustParseAddrPort("192.0.2.7:40000"), Related: netip.MustParseAddrPort("10.0.0.2:5000")}
	if ci != want {
		t.Fatalf("got %+v, want %+v", ci, want)
	}
}

func FuzzParseCandidate(f *testing.F) {
	for _, s := range []string{
		"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
		"candidate:1 1 udp 1694498815 192.0.2.7 40000 typ srflx raddr 10.0.0.2 rport 5000",
		"candidate:2 1 udp 16777215 203.0.113.1 50000 typ relay raddr 192.0.2.7 rport 40000",
		"candidate:3 1 udp 2130706431 ::1 5000 typ host generation 0",
		"1 1 UDP 2130706431 127.0.0.1 5000 typ host",
		"candidate:1 1 tcp 2130706431 127.0.0.1 9 typ host tcptype active",
		"candidate:1 1 udp 1 x.local 5000 typ host",
		"candidate:",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ci, err := ParseCandidate(s)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) && !errors.Is(err, post.ErrNotSupported) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		_ = ci.String()
	})
}

func TestPathFailure(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := loopbackConfig()
	cfg.KeepAliveInterval = 50 * time.Millisecond
	cfg.DisconnectedTimeout = 200 * time.Millisecond
	cfg.FailedTimeout = 200 * time.Millisecond
	// pion fails a check that has not succeeded within the same 400 ms, which
	// a loaded host can exceed; such an attempt starts over with new agents.
	var ca *PacketConn
	var b *peer
	for attempt := 1; ; attempt++ {
		var err error
		ca, b, err = connectWith(t, ctx, cfg)
		if err == nil {
			break
		}
		if !errors.Is(err, post.ErrTimeout) || attempt == 5 {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		t.Logf("attempt %d: %v", attempt, err)
	}
	// The peer vanishes: reads fail once consent expires, with an error
	// that stops read loops.
	b.agent.Close()
	_, _, err := ca.ReadFrom(make([]byte, 100))
	if !errors.Is(err, post.ErrTimeout) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after the peer vanished: %v", err)
	}
	if _, err := ca.WriteTo([]byte("x"), nil); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("write after the peer vanished: %v", err)
	}
}

// connectWith runs ICE between two new loopback agents configured by cfg and
// returns the controlling side's conn and the other peer.
func connectWith(t *testing.T, ctx context.Context, cfg Config) (*PacketConn, *peer, error) {
	t.Helper()
	a, b := newPeer(t, ctx, cfg), newPeer(t, ctx, cfg)
	if err := a.agent.AddRemote(b.ufrag, b.pwd, b.cands); err != nil {
		t.Fatal(err)
	}
	if err := b.agent.AddRemote(a.ufrag, a.pwd, a.cands); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.agent.Connect(ctx, false)
		done <- err
	}()
	ca, err := a.agent.Connect(ctx, true)
	if err != nil {
		a.agent.Close()
		b.agent.Close()
		<-done
		return nil, nil, err
	}
	if err := <-done; err != nil {
		a.agent.Close()
		b.agent.Close()
		return nil, nil, err
	}
	return ca, b, nil
}

func TestCloseDuringConnect(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newPeer(t, ctx, loopbackConfig()), newPeer(t, ctx, loopbackConfig())
	if err := a.agent.AddRemote(b.ufrag, b.pwd, b.cands); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.agent.Connect(ctx, false) // b never answers
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	a.agent.Close()
	if err := <-done; !errors.Is(err, post.ErrClosed) {
		t.Fatalf("connect interrupted by Close: %v", err)
	}
}

// TestIPv6 connects over a global or unique-local IPv6 address of this
// host (pion never gathers ::1).
func TestIPv6(t *testing.T) {
	var v6 netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && p.Addr().IsGlobalUnicast() {
			v6 = p.Addr()
			break
		}
	}
	if !v6.IsValid() {
		t.Skip("no global or unique-local IPv6 address")
	}
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{
		NetworkTypes: []string{UDP6},
		IPFilter:     func(a netip.Addr) bool { return a == v6 },
	}
	a, b := newPeer(t, ctx, cfg), newPeer(t, ctx, cfg)
	if err := a.agent.AddRemote(b.ufrag, b.pwd, b.cands); err != nil {
		t.Fatal(err)
	}
	if err := b.agent.AddRemote(a.ufrag, a.pwd, a.cands); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := b.agent.Connect(ctx, false)
		if err == nil {
			buf := make([]byte, 10)
			var n int
			n, _, err = c.ReadFrom(buf)
			if err == nil && string(buf[:n]) != "v6" {
				err = errors.New("wrong payload " + string(buf[:n]))
			}
		}
		done <- err
	}()
	ca, err := a.agent.Connect(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if l, _, _ := a.agent.Selected(); l.Network != UDP6 || !l.Addr.Addr().Is6() {
		t.Errorf("selected local %+v", l)
	}
	if _, err := ca.WriteTo([]byte("v6"), nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSelectedSignalledAfterCheck: b's checks reach a before b's
// candidates do (a knows only b's credentials and a candidate nobody
// answers on), so a learns b's address as peer-reflexive, as a
// rendezvous answer overtaken by the checks makes it; once b's host
// candidate is signalled, Selected reports it as that host candidate.
func TestSelectedSignalledAfterCheck(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newPeer(t, ctx, loopbackConfig()), newPeer(t, ctx, loopbackConfig())
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	decoy := "candidate:1 1 udp 2130706431 127.0.0.1 " + strconv.Itoa(silent.LocalAddr().(*net.UDPAddr).Port) + " typ host"
	if err := a.agent.AddRemote(b.ufrag, b.pwd, []string{decoy}); err != nil {
		t.Fatal(err)
	}
	if err := b.agent.AddRemote(a.ufrag, a.pwd, a.cands); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, errB = b.agent.Connect(ctx, true)
	}()
	_, errA := a.agent.Connect(ctx, false)
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("connect: %v / %v", errA, errB)
	}
	bl, _, _ := b.agent.Selected()
	if _, r, ok := a.agent.Selected(); !ok || r.Type != PeerReflexive || r.Addr != bl.Addr {
		t.Fatalf("before b's candidates: remote %v (%v), b's local %v", r, ok, bl)
	}
	if err := a.agent.AddRemote(b.ufrag, b.pwd, b.cands); err != nil {
		t.Fatal(err)
	}
	if _, r, ok := a.agent.Selected(); !ok || r.Type != Host || r.Addr != bl.Addr {
		t.Fatalf("after b's candidates: remote %v (%v), b's local %v", r, ok, bl)
	}
}
