package fsp

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/postsockets/postsockets/internal/netem"
)

// movingConn is a client socket that can change its address: it reads
// from every socket it ever had and writes from the newest one.
type movingConn struct {
	net.PacketConn // the first socket: LocalAddr, deadlines
	cur            atomic.Pointer[net.UDPConn]
	in             chan rx
	done           chan struct{}
	once           sync.Once
	mu             sync.Mutex
	all            []*net.UDPConn
}

type rx struct {
	b    []byte
	addr net.Addr
}

func newMovingConn(t *testing.T) *movingConn {
	m := &movingConn{in: make(chan rx, 256), done: make(chan struct{})}
	m.move(t)
	m.PacketConn = m.all[0]
	return m
}

func (m *movingConn) move(t *testing.T) {
	pc := mustUDP(t)
	m.mu.Lock()
	m.all = append(m.all, pc)
	m.mu.Unlock()
	m.cur.Store(pc)
	go func() {
		for {
			buf := make([]byte, 4096)
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case m.in <- rx{buf[:n], addr}:
			case <-m.done:
				return
			}
		}
	}()
}

func (m *movingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-m.in:
		return copy(b, p.b), p.addr, nil
	case <-m.done:
		return 0, nil, net.ErrClosed
	}
}

func (m *movingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	return m.cur.Load().WriteTo(b, addr)
}

func (m *movingConn) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, pc := range m.all {
		pc.Close()
	}
	m.once.Do(func() { close(m.done) })
	return nil
}

func TestMobility(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	mc := newMovingConn(t)
	tr := &Transport{Conn: mc}
	t.Cleanup(func() { mc.Close(); tr.Close() })
	ctx := testContext(t)
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	first := s.RemoteAddr().String()
	for i := range 3 {
		if i > 0 {
			mc.move(t) // the client changes address mid-connection
		}
		msg := randBytes(200000)
		go c.SendMessage(ctx, msg)
		got, err := s.ReceiveMessage(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d: %v", i, err)
		}
		go s.SendMessage(ctx, msg)
		if got, err = c.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d back: %v", i, err)
		}
	}
	if s.RemoteAddr().String() == first {
		t.Fatal("server did not follow the client to its new address")
	}
}

func TestLossyTransferNewReno(t *testing.T) {
	c, s := lossyPairConfig(t, netem.Config{Loss: 0.05, Reorder: 0.02, ReorderDelay: 2 * 1e6, Duplicate: 0.01, Seed: 11},
		func(c *Config) { c.Congestion = "newreno" })
	transfer(t, c, s, 4<<20)
}
