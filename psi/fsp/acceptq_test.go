package fsp

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestAcceptQueueBurst: more dials than the old accept queue of 256
// complete while nobody calls Accept; none is reset after its Dial
// returned, and every one carries a message once accepted.
func TestAcceptQueueBurst(t *testing.T) {
	const n = 400
	scfg, ccfg := pair(t)
	scfg.MemoryBudget = 1 << 32 // n connections from one address
	scfg.MaxHandshakeRate = 1 << 20
	scfg.MaxPendingPerAddress, scfg.MaxPendingPerPrefix = n, n
	// The 400 handshakes share one client socket and, under -race on a
	// loaded host, the cores: both ends wait as long as the test
	// (testContext), not 10 s, so a slow handshake is not taken for a
	// lost one (dial 21 timed out so in a -race run at load 7-10).
	scfg.HandshakeTimeout, ccfg.HandshakeTimeout = time.Minute, time.Minute
	l := listen(t, scfg)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadBuffer(socketBuffer) // as an owned socket's: 400 answers at once
	tr := &Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	ctx := testContext(t)
	conns := make([]*Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = tr.Dial(ctx, l.Addr(), ccfg)
			if errs[i] == nil {
				errs[i] = conns[i].SendMessage(ctx, []byte("hello"))
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
	}
	for i := range n {
		s, err := l.Accept(ctx)
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "hello" {
			t.Fatalf("accepted %d: %q, %v", i, m, err)
		}
		s.Close()
	}
	if st := l.Stats(); st.Unaccepted != 0 {
		t.Fatalf("%d left unaccepted", st.Unaccepted)
	}
	for _, c := range conns {
		c.Close()
	}
}

// TestAcceptQueueNeverDrained: a queue that always holds a few
// connections while Accept keeps pace does not grow its array by every
// connection ever queued.
func TestAcceptQueueNeverDrained(t *testing.T) {
	var a acceptQueue
	a.ready = make(chan struct{}, 1)
	c := new(Conn)
	for range 3 {
		a.push(c)
	}
	for range 100000 {
		a.push(c)
		if a.pop() != c {
			t.Fatal("pop returned another connection")
		}
	}
	if a.len() != 3 || cap(a.q) > 256 {
		t.Fatalf("%d queued in an array of %d", a.len(), cap(a.q))
	}
}
