package fsp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
)

// gateCC is a congestion controller whose window the test sets (under the
// group's lock).
type gateCC struct {
	congestion.Controller
	window int
}

func (g *gateCC) CanSend(inFlight int) bool { return inFlight < g.window }
func (g *gateCC) Window() int               { return g.window }

// TestCCWakeWaitingClone: when the shared window opens, the data of the
// clone that waits for it is sent, not left waiting for a wake-up that
// went to a clone with nothing to send, or never came. A clone noted
// blocked by an acknowledgement-only send while the window was full took
// the wake-up, and the waiting clone sat until the idle timeout.
func TestCCWakeWaitingClone(t *testing.T) {
	t.Run("AckOnlySend", func(t *testing.T) {
		testCCWake(t, openOnePacket, func(idle *Conn) {
			idle.mu.Lock()
			idle.trySend() // nothing to send but what it owes
			idle.mu.Unlock()
		})
	})
	// A clone noted blocked whose data then vanished (superseded, or a
	// queued retransmission acknowledged after all) passes the wake-up on.
	t.Run("StaleBlocked", func(t *testing.T) {
		testCCWake(t, openOnePacket, func(idle *Conn) {
			idle.ccs.g.mu.Lock()
			idle.ccs.p.block(&idle.ccs) // ahead of busy on the waiting list
			idle.ccs.g.mu.Unlock()
		})
	})
	// The window of a path also opens when a member moves to another
	// peer address, taking its bytes in flight along.
	t.Run("PathMove", func(t *testing.T) {
		testCCWake(t, func(idle *Conn, p *ccPath, gate *gateCC) {
			idle.mu.Lock()
			idle.remote = peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:9")}
			idle.ccLock()
			idle.ccUnlock()
			idle.mu.Unlock()
		}, func(idle *Conn) {
			g := idle.ccs.g
			g.mu.Lock()
			idle.ccs.inFlight += 100 // as if idle's packets filled the window
			idle.ccs.p.inFlight += 100
			idle.ccs.p.cc.(*gateCC).window = 100
			g.mu.Unlock()
		})
	})
}

// openOnePacket opens p's window by a packet.
func openOnePacket(idle *Conn, p *ccPath, gate *gateCC) {
	g := idle.ccs.g
	g.mu.Lock()
	gate.window = 1
	p.kickBlocked(nil)
	g.mu.Unlock()
}

// testCCWake shuts the window of a session with two clones, has mark
// prepare the clone idle, queues a message on the other, busy, and has
// open open the window.
func testCCWake(t *testing.T, open func(idle *Conn, p *ccPath, gate *gateCC), mark func(idle *Conn)) {
	scfg, ccfg := pair(t)
	scfg.KeepAlive, ccfg.KeepAlive = -1, -1
	// Nothing but the window's opening may let busy send: no pacing, no
	// path MTU probes (which leave beyond the window and draw an
	// acknowledgement), no keep-alives.
	ccfg.DisablePacing, ccfg.DisablePathMTUDiscovery = true, true
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	got := make(chan string, 8)
	var peers []*Conn
	accepted := make(chan *Conn, 2)
	go func() {
		for {
			f, err := s.AcceptFork(ctx)
			if err != nil {
				return
			}
			accepted <- f
			go func() {
				for {
					m, err := f.ReceiveMessage(ctx)
					if err != nil {
						return
					}
					got <- string(m)
				}
			}()
		}
	}()
	idle, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []*Conn{idle, busy} {
		if err := f.SendMessage(ctx, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		<-got
		peers = append(peers, <-accepted)
	}
	// Let everything be acknowledged and the session fall quiet: nothing
	// may arrive later that would wake busy by chance.
	all := append([]*Conn{c, s, idle, busy}, peers...)
	heard := func() (n uint64) {
		for _, f := range all {
			f.mu.Lock()
			n += f.stats.PacketsReceived
			f.mu.Unlock()
		}
		return n
	}
	inFlight := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		p := c.ccLock()
		defer c.ccUnlock()
		return p.inFlight
	}
	last, since := heard(), time.Now()
	for deadline := time.Now().Add(10 * time.Second); inFlight() > 0 || time.Since(since) < 300*time.Millisecond; time.Sleep(10 * time.Millisecond) {
		if n := heard(); n != last {
			last, since = n, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatal("the session does not fall quiet")
		}
	}
	g := c.ccs.g
	gate := &gateCC{}
	g.mu.Lock()
	p := c.ccs.p
	gate.Controller = p.cc
	p.cc = gate // shut
	g.mu.Unlock()

	mark(idle)
	// busy's message waits for the window.
	if err := busy.SendMessage(ctx, []byte("waiting")); err != nil {
		t.Fatal(err)
	}
	open(idle, p, gate)
	select {
	case m := <-got:
		if m != "waiting" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("the message waiting for the window was not sent within 2 s of its opening: %s", busy.debugState())
	}
}
