package quic

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// blockable drops every datagram it would send once blocked.
type blockable struct {
	net.PacketConn
	blocked atomic.Bool
}

func (b *blockable) WriteTo(p []byte, addr net.Addr) (int, error) {
	if b.blocked.Load() {
		return len(p), nil
	}
	return b.PacketConn.WriteTo(p, addr)
}

type events struct {
	mu  sync.Mutex
	evs []psi.Event
}

func (e *events) add(ev psi.Event) { e.mu.Lock(); e.evs = append(e.evs, ev); e.mu.Unlock() }

func (e *events) of(k psi.EventKind) []psi.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []psi.Event
	for _, ev := range e.evs {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// TestEventSoftErrorPTO: with Config.Events, a connection whose path is
// blocked reports a SoftError once quic-go's probe timeouts pile up.
func TestEventSoftErrorPTO(t *testing.T) {
	bc := &blockable{}
	st := &Stack{PacketConn: func(netip.AddrPort) (net.PacketConn, error) {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		bc.PacketConn = pc
		return bc, err
	}}
	scfg, ccfg := serverConfig(), clientConfig()
	ccfg.Events = true
	l, err := (&Stack{}).Listen(testContext(t), loopback, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := testContext(t)
	c, err := st.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.(*Transient).Abort(nil)
	var evs events
	c.(psi.EventSource).SetEventHandler(evs.add)
	send(t, ctx, c, []byte("before"), nil)
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.(*Transient).Abort(nil)
	if m, err := readAll(ctx, s, 64); err != nil || string(m) != "before" {
		t.Fatalf("%q, %v", m, err)
	}
	bc.blocked.Store(true)
	send(t, ctx, c, []byte("into the void"), nil)
	deadline := time.Now().Add(10 * time.Second)
	for len(evs.of(psi.EventSoftError)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	se := evs.of(psi.EventSoftError)
	if len(se) != 1 || !errors.Is(se[0].Err, post.ErrTimeout) || se[0].Old.Remote != l.Addr() {
		t.Fatalf("SoftError events %+v, want one timeout on the path to %v", se, l.Addr())
	}
	t.Log(se[0].Err)
}
