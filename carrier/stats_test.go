package carrier_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
)

func TestStats(t *testing.T) { forStacks(t, testStats) }

func testStats(t *testing.T, stack string) {
	var slog eventLog
	scfg := serverConfig()
	scfg.OnEvent = slog.add
	scfg.Policy.Stack(stack, policy.Require)
	l := listen(t, scfg)
	ctx := ctxT(t)
	ccfg := clientConfig()
	ccfg.Policy.Stack(stack, policy.Require)
	c, err := carrier.Initiate(ctx, l.Remote("localhost"), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if err := c.Send(ctx, random(1000)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.From != s.Path().Remote || m.Fork != 0 {
			t.Fatalf("from %v fork %d; path %v", m.From, m.Fork, s.Path())
		}
	}
	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Send(ctx, []byte("on the fork")); err != nil {
		t.Fatal(err)
	}
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	m, err := sf.Receive(ctx)
	if err != nil || m.Fork != 1 {
		t.Fatalf("fork message: %v fork %v", err, m)
	}
	// A message is counted once its write returns, which may be just
	// after the peer read it.
	cs := c.Stats()
	for end := time.Now().Add(2 * time.Second); cs.MessagesSent < 3 && time.Now().Before(end); cs = c.Stats() {
		time.Sleep(time.Millisecond)
	}
	ss := s.Stats()
	if cs.MessagesSent != 3 || cs.BytesSent != 3000 || cs.Forks != 1 || cs.Stack != stack || cs.Race.Stack != stack || cs.Race.Attempts == 0 {
		t.Fatalf("client stats %+v", cs)
	}
	if ss.MessagesReceived != 3 || ss.BytesReceived != 3000 || ss.Forks != 1 {
		t.Fatalf("server stats %+v", ss)
	}
	if stack != "tcp" && cs.PacketsSent == 0 {
		t.Fatalf("no packet counters from %s: %+v", stack, cs.TransientStats)
	}
	// What every stack can tell (TCP through TCP_INFO, Linux); FSP
	// reported no bytes and no minimum RTT until 2 December.
	if ts := cs.TransientStats; (stack != "tcp" || runtime.GOOS == "linux") && (ts.BytesSent < 3000 || ts.PacketsReceived > 0 && ts.BytesReceived == 0 || ts.MinRTT <= 0) {
		t.Fatalf("%s reports no bytes or minimum RTT: %+v", stack, ts)
	}
	if ls := l.Stats(); ls.Accepted[stack] != 1 {
		t.Fatalf("listener stats %+v", ls)
	}
	c.Close()
	if _, err := s.Receive(ctx); err == nil {
		t.Fatal("receive after the peer closed")
	}
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(slog.of(carrier.ClosedEvent)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := slog.of(carrier.ClosedEvent); len(got) != 1 {
		t.Fatalf("server Closed events: %+v", slog.evs)
	}
	if st := s.Stats(); st.Stack != stack || !st.Path.Remote.IsValid() {
		t.Fatalf("stats after close %+v", st)
	}
}
