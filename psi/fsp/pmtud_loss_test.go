package fsp

import (
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
)

// netemCapPair connects a client and a server over netem with random
// loss imp, whose sockets also drop datagrams larger than their caps.
func netemCapPair(t *testing.T, imp netem.Config) (cli, srv *Conn, cc, sc *capConn) {
	t.Helper()
	wrap := func(seed int64) *capConn {
		imp.Seed = seed
		pc, err := netem.Listen("udp4", "127.0.0.1:0", imp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return capConnOver(pc, MaxDatagramSize)
	}
	cc, sc = wrap(41), wrap(42)
	cli, srv = capPairOver(t, cc, sc)
	return cli, srv, cc, sc
}

// TestPMTUDRandomLossKeepsSize: random loss of 5% each way, on a path
// that carries 1,452-byte datagrams. Probe timeouts happen (a lost
// lone request or echo, a lost tail of a transfer) but are no evidence
// of a black hole: the size found stays, on both ends, through small
// request/response exchanges and bulk transfers alike.
func TestPMTUDRandomLossKeepsSize(t *testing.T) {
	c, s, _, _ := netemCapPair(t, netem.Config{Loss: 0.05})
	if mtu := searchDone(t, s, c); mtu != MaxDatagramSize {
		t.Fatalf("search over 5%% loss found %d", mtu)
	}
	searchDone(t, c, s)
	ctx := testContext(t)
	msg := make([]byte, 200)
	for round := 0; ; round++ {
		// Lone small messages: a loss is repaired by a probe timeout.
		for range 100 {
			if err := c.SendMessage(ctx, msg); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReceiveMessage(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.SendMessage(ctx, msg); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ReceiveMessage(ctx); err != nil {
				t.Fatal(err)
			}
		}
		transferMid(t, s, c, 1<<20, func() {})
		cs, ss := c.Stats(), s.Stats()
		if cs.MTUFallbacks != 0 || ss.MTUFallbacks != 0 || c.PathMTU() != MaxDatagramSize || s.PathMTU() != MaxDatagramSize {
			t.Fatalf("round %d: path MTU fell to %d/%d (%d/%d fallbacks) after %d/%d probe timeouts",
				round, c.PathMTU(), s.PathMTU(), cs.MTUFallbacks, ss.MTUFallbacks, cs.Probes, ss.Probes)
		}
		if cs.Probes+ss.Probes >= 20 || round == 9 {
			t.Logf("%d rounds: %d/%d probe timeouts, %d/%d packets lost, MTU kept", round+1, cs.Probes, ss.Probes, cs.PacketsLost, ss.PacketsLost)
			if cs.Probes+ss.Probes == 0 {
				t.Fatal("no probe timeout: the test proves nothing")
			}
			return
		}
	}
}

// TestPMTUDBlackHoleUnderLoss: 2% random loss each way, and mid-transfer
// the path stops carrying datagrams larger than the base size. The
// sender still confirms the black hole, falls back, and the transfer
// completes intact.
func TestPMTUDBlackHoleUnderLoss(t *testing.T) {
	c, s, cc, sc := netemCapPair(t, netem.Config{Loss: 0.02})
	if mtu := searchDone(t, s, c); mtu != MaxDatagramSize {
		t.Fatalf("search found %d", mtu)
	}
	transferMid(t, s, c, 4<<20, func() {
		cc.cap.Store(BaseDatagramSize)
		sc.cap.Store(BaseDatagramSize)
	})
	for range 10 {
		if s.PathMTU() == BaseDatagramSize {
			break
		}
		transferMid(t, s, c, 1<<20, func() {})
	}
	if st := s.Stats(); s.PathMTU() != BaseDatagramSize || st.MTUFallbacks == 0 {
		t.Fatalf("after the fall: PathMTU %d, %d fallbacks", s.PathMTU(), st.MTUFallbacks)
	}
	pingPong(t, c, s)
}

// TestPMTUDOutageKeepsSize: mid-transfer the path carries nothing, in
// either direction, for 300 ms: probe timeouts expire with large packets
// in flight, but the base-size confirmation goes unanswered too, so the
// size stays once the path is back.
func TestPMTUDOutageKeepsSize(t *testing.T) {
	c, s, cc, sc := netemCapPair(t, netem.Config{})
	if mtu := searchDone(t, s, c); mtu != MaxDatagramSize {
		t.Fatalf("search found %d", mtu)
	}
	done := make(chan struct{})
	transferMid(t, s, c, 8<<20, func() {
		for _, x := range []*capConn{cc, sc} {
			x.PacketConn.(*netem.PacketConn).SetBlackhole(true)
		}
		go func() {
			defer close(done)
			time.Sleep(300 * time.Millisecond)
			for _, x := range []*capConn{cc, sc} {
				x.PacketConn.(*netem.PacketConn).SetBlackhole(false)
			}
		}()
	})
	<-done
	transferMid(t, s, c, 1<<20, func() {})
	if st := s.Stats(); s.PathMTU() != MaxDatagramSize || st.MTUFallbacks != 0 {
		t.Fatalf("after the outage: PathMTU %d, %d fallbacks, %d probe timeouts", s.PathMTU(), st.MTUFallbacks, st.Probes)
	}
}
