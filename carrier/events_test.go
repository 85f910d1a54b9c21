package carrier_test

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// movingPC is a client socket that can change its address (it reads
// from every socket it had and writes from the newest) or go silent.
type movingPC struct {
	net.PacketConn // the first socket
	cur            atomic.Pointer[net.UDPConn]
	blocked        atomic.Bool
	in             chan movingRx
	done           chan struct{}
	once           sync.Once
	mu             sync.Mutex
	all            []*net.UDPConn
}

type movingRx struct {
	b    []byte
	addr net.Addr
}

func newMovingPC(t *testing.T) *movingPC {
	m := &movingPC{in: make(chan movingRx, 256), done: make(chan struct{})}
	m.move(t)
	m.PacketConn = m.all[0]
	t.Cleanup(func() { m.Close() })
	return m
}

func (m *movingPC) move(t *testing.T) *net.UDPConn {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.all = append(m.all, pc)
	m.mu.Unlock()
	m.cur.Store(pc)
	go func() {
		for {
			buf := make([]byte, 2048)
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if m.blocked.Load() {
				continue
			}
			select {
			case m.in <- movingRx{buf[:n], addr}:
			case <-m.done:
				return
			}
		}
	}()
	return pc
}

func (m *movingPC) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-m.in:
		return copy(b, p.b), p.addr, nil
	case <-m.done:
		return 0, nil, net.ErrClosed
	}
}

func (m *movingPC) WriteTo(b []byte, addr net.Addr) (int, error) {
	if m.blocked.Load() {
		return len(b), nil
	}
	return m.cur.Load().WriteTo(b, addr)
}

func (m *movingPC) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, pc := range m.all {
		pc.Close()
	}
	m.once.Do(func() { close(m.done) })
	return nil
}

// eventLog collects a Carrier's events.
type eventLog struct {
	mu  sync.Mutex
	evs []carrier.Event
}

func (l *eventLog) add(e carrier.Event) { l.mu.Lock(); l.evs = append(l.evs, e); l.mu.Unlock() }

func (l *eventLog) of(k carrier.EventKind) []carrier.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []carrier.Event
	for _, e := range l.evs {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// movingPair connects an FSP client on a movingPC to a listener, both
// logging events.
func movingPair(t *testing.T, idle time.Duration) (mc *movingPC, c, s *carrier.Carrier, clog, slog *eventLog) {
	mc = newMovingPC(t)
	tr := &fsp.Transport{Conn: mc}
	t.Cleanup(func() { mc.Close(); tr.Close() })
	clog, slog = &eventLog{}, &eventLog{}
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.OnEvent, ccfg.OnEvent = slog.add, clog.add
	ccfg.Stacks = []psi.Stack{&fsp.Stack{Transport: tr}}
	scfg.Stacks = []psi.Stack{&fsp.Stack{}}
	ccfg.Transient.IdleTimeout = idle
	c, s = pairOn(t, "fsp", ccfg, scfg)
	return
}

func TestEventPathChangeOnRebind(t *testing.T) {
	mc, c, s, _, slog := movingPair(t, 0)
	ctx := ctxT(t)
	msg := random(300000)
	for i := range 2 {
		if i == 1 {
			mc.move(t) // the client changes address mid-transfer
		}
		go c.Send(ctx, msg)
		m, err := s.Receive(ctx)
		if err != nil || !bytes.Equal(m.Content, msg) {
			t.Fatalf("round %d: %v", i, err)
		}
		if m.From != s.Path().Remote || m.Fork != 0 || m.Early {
			t.Fatalf("round %d: message from %v fork %d early %v; path %v", i, m.From, m.Fork, m.Early, s.Path())
		}
	}
	newAddr := mc.cur.Load().LocalAddr().(*net.UDPAddr).AddrPort()
	deadline := time.Now().Add(5 * time.Second)
	for len(slog.of(carrier.PathChange)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	pcs := slog.of(carrier.PathChange)
	if len(pcs) != 1 {
		t.Fatalf("server got %d PathChange events, want 1: %+v", len(pcs), pcs)
	}
	if pcs[0].New.Remote.Port() != newAddr.Port() || pcs[0].Old.Remote.Port() == newAddr.Port() {
		t.Fatalf("PathChange %v -> %v, want the client's new address %v", pcs[0].Old, pcs[0].New, newAddr)
	}
	if st := s.Stats(); st.MessagesReceived != 3 || st.Stack != "fsp" || st.PacketsReceived == 0 {
		t.Fatalf("server stats %+v", st)
	}
}

func TestEventBlockedPath(t *testing.T) {
	mc, c, s, clog, _ := movingPair(t, 3*time.Second) // time for the probes and a timeout
	ctx := ctxT(t)
	// A round trip first: the client's handshake is confirmed.
	if err := s.Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	mc.blocked.Store(true)
	c.Send(ctx, random(100000)) // in flight when the path is blocked
	if _, err := c.Receive(ctx); err == nil {
		t.Fatal("receive on a blocked path succeeded")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(clog.of(carrier.ClosedEvent)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// FSP reports the retransmission timeout as a SoftError, then the
	// Carrier the end of its transient as a ConnectionError.
	if len(clog.of(carrier.ConnectionError)) != 1 || len(clog.of(carrier.SoftError)) == 0 {
		t.Fatalf("want SoftError and one ConnectionError: %+v", clog.evs)
	}
	if n := len(clog.of(carrier.ClosedEvent)); n != 1 {
		t.Fatalf("%d Closed events", n)
	}
}

// TestEventsOfForks: forks report through their root's Config.OnEvent,
// each with one Closed of its own, and Event.Fork says which Carrier an
// event is for (before 2 December nothing told a fork's Closed from the
// root's).
func TestEventsOfForks(t *testing.T) {
	forStacks(t, func(t *testing.T, stack string) {
		var log eventLog
		ccfg := clientConfig()
		ccfg.OnEvent = log.add
		c, s := pairOn(t, stack, ccfg, nil)
		ctx := ctxT(t)
		var forks []*carrier.Carrier
		for i := range 2 {
			f, err := c.Fork(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Send(ctx, []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AcceptFork(ctx); err != nil {
				t.Fatal(err)
			}
			forks = append(forks, f)
		}
		for _, f := range append(forks, c) {
			f.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(log.of(carrier.ClosedEvent)) < 3 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		got := map[uint64]int{}
		for _, e := range log.of(carrier.ClosedEvent) {
			got[e.Fork]++
		}
		if len(got) != 3 || got[0] != 1 || got[1] != 1 || got[2] != 1 {
			t.Fatalf("Closed events by fork number: %v, want one each for 0, 1, 2", got)
		}
	})
}
