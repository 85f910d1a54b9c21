package fsp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
)

// bareSession is a congestion group of n members that are not
// connections: their wake-ups are counted, not run.
type bareSession struct {
	root    *Conn
	members []*Conn
	woken   map[*Conn]int
}

func newBareSession(tb testing.TB, n int) *bareSession {
	tb.Helper()
	cfg := &Config{}
	remote := peerAddr{ap: netip.MustParseAddrPort("192.0.2.1:4000")}
	b := &bareSession{root: &Conn{cfg: cfg, remote: remote}, woken: map[*Conn]int{}}
	b.root.ccJoin()
	for range n {
		m := &Conn{cfg: cfg, remote: remote, parent: b.root}
		m.ccJoin()
		m.ccs.wake = func() { b.woken[m]++ }
		b.members = append(b.members, m)
	}
	return b
}

// inFlight gives every member one packet in flight, the i-th sent at
// t0 + i ms, which did not ask for an immediate acknowledgement.
func (b *bareSession) inFlight(t0 time.Time) {
	g := b.root.ccs.g
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, m := range b.members {
		m.ccs.p.rackSet(&m.ccs, rackPacket{sent: t0.Add(time.Duration(i) * time.Millisecond), wait: time.Hour})
	}
}

// ack has the root acknowledge one packet sent at sent.
func (b *bareSession) ack(now, sent time.Time, gpn uint64) {
	e := &reliability.Entry[txData]{Bytes: MaxDatagramSize, SentAt: sent, Sent: true}
	e.Value.gpn = gpn
	b.root.ccOnAck(now, []*reliability.Entry[txData]{e}, 0, now.Sub(sent), 0)
}

// TestCCQueues: an acknowledgement tells exactly the members whose oldest
// packet was sent before the one acknowledged, each once; the window's
// opening wakes as many held-back members as it has room for, in the
// order they were held back (conn_cc_queue.go).
func TestCCQueues(t *testing.T) {
	b := newBareSession(t, 1000)
	t0 := time.Now()
	b.inFlight(t0)
	b.root.mu.Lock()
	defer b.root.mu.Unlock()
	b.ack(t0.Add(2*time.Second), t0.Add(500*time.Millisecond+time.Microsecond), 1)
	for i, m := range b.members {
		if want := min(1, max(0, 501-i)); b.woken[m] != want {
			t.Fatalf("member %d woken %d times, want %d", i, b.woken[m], want)
		}
		if i <= 500 && m.ccs.armedAt.IsZero() {
			t.Fatalf("member %d: no loss timer armed", i)
		}
	}
	b.ack(t0.Add(2*time.Second), t0.Add(500*time.Millisecond+time.Microsecond), 2)
	if len(b.woken) != 501 || b.woken[b.members[0]] != 1 {
		t.Fatalf("a repeated acknowledgement woke members again: %d woken", len(b.woken))
	}

	clear(b.woken)
	g := b.root.ccs.g
	p := b.root.ccs.p
	g.mu.Lock()
	full := p.cc.Window()
	p.inFlight += full
	order := []int{7, 3, 999, 0, 512}
	for _, i := range order {
		p.block(&b.members[i].ccs)
		p.block(&b.members[i].ccs) // once on the list
	}
	p.inFlight -= 2 * MaxDatagramSize // room for two packets: wake three
	p.kickBlocked(nil)
	g.mu.Unlock()
	for k, i := range order {
		m := b.members[i]
		if want := min(1, max(0, 3-k)); b.woken[m] != want || m.ccs.blocked != (want == 0) {
			t.Fatalf("held-back member %d (%d-th): woken %d, blocked %v", i, k, b.woken[m], m.ccs.blocked)
		}
	}
	// The rest, once more room opens; a member that left is skipped.
	g.mu.Lock()
	b.members[512].ccs.leave()
	p.inFlight = 0
	p.kickBlocked(nil)
	g.mu.Unlock()
	if b.woken[b.members[0]] != 1 || b.woken[b.members[512]] != 0 || len(b.woken) != 4 {
		t.Fatalf("after the window opened: %v woken", len(b.woken))
	}
}

// BenchmarkCCOnAck: the cost of one acknowledgement to a session's shared
// congestion state with 1 and 1,000 members, each with a packet in
// flight sent after the acknowledged one (so none has news) and 10% held
// back by the window. ns/op should not grow with the members.
func BenchmarkCCOnAck(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			s := newBareSession(b, n)
			t0 := time.Now()
			s.inFlight(t0.Add(time.Hour))
			g, p := s.root.ccs.g, s.root.ccs.p
			g.mu.Lock()
			for i := 0; i < n; i += 10 {
				p.block(&s.members[i].ccs)
			}
			g.mu.Unlock()
			s.root.mu.Lock()
			defer s.root.mu.Unlock()
			b.ResetTimer()
			for i := range b.N {
				// A window always full: the acknowledgement wakes no one.
				g.mu.Lock()
				p.inFlight = p.cc.Window()
				g.mu.Unlock()
				s.ack(t0.Add(time.Duration(i)*time.Microsecond), t0, uint64(i+1))
			}
		})
	}
}
