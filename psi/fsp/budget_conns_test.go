package fsp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// TestDefaultBudgetHoldsConns: the default budget (256 MiB) admits at
// least 10,000 idle connections, and from one source address at least
// the 1,024 its count bound lets in (Config.MaxConnsPerSource, as
// psi/tcp's and psi/quic's Stack.MaxConnsPerSource), so the budget never
// stops an idle source first.
func TestDefaultBudgetHoldsConns(t *testing.T) {
	b := newBudget((&Config{}).memoryBudget())
	n := 0
	for i := 0; ; i++ {
		// Four addresses in each of four /24s.
		a := netip.AddrFrom4([4]byte{192, 0, byte(i % 4), byte(1 + i/4%4)})
		if !b.take(a, connCharge()) {
			break
		}
		n++
	}
	one := 0
	for b := newBudget((&Config{}).memoryBudget()); b.take(netip.MustParseAddr("192.0.2.1"), connCharge()); {
		one++
	}
	t.Logf("%d idle connections in all, %d from one address (%d bytes each)", n, one, connCharge())
	if n < 10000 || one < 1024 {
		t.Fatalf("%d connections in all, %d from one address", n, one)
	}
}

// TestManyConnsOneSource: 2,000 connections from one address and one
// socket to a listener with the default memory budget all connect, stay
// open together, and still carry data. (The count bound,
// Config.MaxConnsPerSource, 1,024 by default, is raised: this is about
// the budget.)
func TestManyConnsOneSource(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 handshakes")
	}
	// Fewer in a slower build (attack.Paced): under the race detector
	// every handshake costs 5 to 20 times the CPU on both sides.
	n := attack.Paced(2000)
	scfg, ccfg := pair(t)
	scfg.MaxConnsPerSource = n
	l := listen(t, scfg)
	ctx := testContext(t)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })

	accepted := make(chan *Conn, n)
	go func() {
		for {
			s, err := l.Accept(ctx)
			if err != nil {
				return
			}
			accepted <- s
		}
	}()
	// Fewer than 8 handshakes at once: the listener's handshake rate
	// bound (MaxHandshakeRate) applies only past that, and this test is
	// about the budget.
	conns := make([]*Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				c, err := tr.Dial(ctx, l.Addr(), ccfg)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("dial: %v; %+v", err, l.Stats())
	}
	servers := make([]*Conn, 0, n)
	for len(servers) < n {
		select {
		case s := <-accepted:
			servers = append(servers, s)
		case <-ctx.Done():
			t.Fatalf("accepted %d of %d", len(servers), n)
		}
	}
	st := l.Stats()
	t.Logf("%d connections from one address in %v: %+v", n, time.Since(start), st)
	if st.Conns != n || st.Committed != int64(n)*connCharge() || st.Refused != 0 {
		t.Fatalf("%+v", st)
	}
	// Every one still carries a message, and one a large one.
	msg := []byte("still here")
	for _, c := range conns {
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range servers {
		if got, err := s.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%q, %v", got, err)
		}
	}
	big := randBytes(4 << 20)
	go conns[0].SendMessage(ctx, big)
	var s0 *Conn
	for _, s := range servers {
		s.mu.Lock()
		match := s.peer == conns[0].local
		s.mu.Unlock()
		if match {
			s0 = s
		}
	}
	if got, err := s0.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("large message: %v", err)
	}
}

// TestHostileWindowsBounded: peers from four addresses in two /24s fill
// the windows of connections and clones the application accepts but
// never reads, far past the memory budget. The listener holds no more
// than its budget, by its accounting and in its heap once the peers are
// gone; packets past it were dropped unacknowledged; a client connected
// before the attack still completes a transfer; every connection's
// accounting matches what it buffers (rxAccountErr), and once they are
// all closed nothing is charged. The listener takes datagrams of at most
// MaxDatagramSize (as on an Ethernet path): the windows fill with the
// most packets per byte; TestHostileWindowsBoundedJumbo has the default
// Config, which takes jumbo ones on loopback.
func TestHostileWindowsBounded(t *testing.T) { hostileWindows(t, MaxDatagramSize) }

// hostileWindows is TestHostileWindowsBounded with the listener's
// Config.MaxPathMTU set to mtu. With zero (the default, which takes
// JumboDatagramSize on loopback) the attackers send jumbo datagrams from
// their first data packet on, without a search, as a hostile peer may:
// their windows then hold jumbo packets, as many as the windows' bytes
// take (conn_jumbo.go).
func hostileWindows(t *testing.T, mtu int) {
	if testing.Short() {
		t.Skip("attack, several seconds")
	}
	const budget = 8 << 20
	scfg, ccfg := pair(t)
	scfg.MemoryBudget, scfg.MaxPathMTU = budget, mtu
	ccfg.SendBuffer = 128 << 10
	l := listen(t, scfg)
	ctx := testContext(t)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	legit, legitS := connect(t, l, ccfg)
	big := randBytes(256 << 10)
	before := attack.LiveHeap()

	var mu sync.Mutex
	var held []*Conn // accepted, never read, their clones never accepted
	go func() {
		for {
			s, err := l.Accept(sctx)
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, s)
			mu.Unlock()
		}
	}()
	var aborts []func()
	defer func() {
		for _, abort := range aborts {
			abort()
		}
	}()
	var senders sync.WaitGroup
	refused := 0
	msg := randBytes(64 << 10)
	for i := range 4 {
		src := netip.AddrFrom4([4]byte{127, byte(30 + i/2), 0, byte(1 + i%2)})
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
		if err != nil {
			t.Skipf("no loopback address %v: %v", src, err)
		}
		tr := &Transport{Conn: pc}
		aborts = append(aborts, func() { pc.Close(); tr.Close() })
		for range 16 {
			c, err := tr.Dial(ctx, l.Addr(), ccfg)
			if errors.Is(err, post.ErrRefused) || errors.Is(err, post.ErrReset) {
				refused++ // this address's share is full (or filled during the handshake)
				continue
			}
			if err != nil {
				t.Fatalf("dial: %v; %+v", err, l.Stats())
			}
			if mtu == 0 {
				c.mu.Lock()
				c.setPLPMTU(JumboDatagramSize, "path") // its forks start there too
				c.pmtu.raiseAt = time.Now().Add(pmtuRaise)
				c.mu.Unlock()
			}
			// A fork refused once the handshake ended: the budget filled meanwhile.
			if err := sendOnForks(ctx, sctx, c, 3, msg, &senders); err != nil && !errors.Is(err, post.ErrReset) {
				t.Fatal(err)
			}
		}
	}
	// Up to 64 connections and 192 clones, whose windows (96 and 16
	// packets) and fixed state would take about 19 MiB: wait until the
	// budget is full. Sending jumbo packets only, each address may stop
	// short of its share by less than the largest charge it wants: a
	// connection's first jumbo datagram's.
	full := int64(budget - connCharge())
	if mtu == 0 {
		full = budget - 4*baseWindow*jumboExtra
	}
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := l.Stats()
		if st.Committed > full {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the attack never filled the budget: %+v", st)
		}
	}
	// The client connected before still transfers, dropped packets and
	// all, through its base window and whatever it holds.
	go legit.SendMessage(ctx, big)
	if got, err := legitS.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("legitimate transfer: %v", err)
	}
	st := l.Stats()
	stop()
	for _, abort := range aborts {
		abort()
	}
	senders.Wait()
	// What is left is the server's, holding the attackers' connections
	// until its idle timeout. The attackers ran in this process: what
	// their goroutines release while a reading collects can still be
	// counted, so the least of three readings, 200 ms apart, is the
	// server's.
	legit.Close()
	legitS.Close()
	heap := attack.LiveHeap()
	for range 2 {
		time.Sleep(200 * time.Millisecond)
		heap = min(heap, attack.LiveHeap())
	}
	var dropped uint64
	var all []*Conn // the attackers' connections and clones at the server
	mu.Lock()
	for _, s := range held {
		dropped += s.Stats().BudgetDropped
		all = append(all, s)
		s.mu.Lock()
		for _, cl := range s.clones {
			cl.mu.Lock()
			dropped += cl.stats.BudgetDropped
			cl.mu.Unlock()
			all = append(all, cl)
		}
		s.mu.Unlock()
	}
	mu.Unlock()
	jumbo := 0
	for _, c := range all {
		checkRx(t, c)
		c.mu.Lock()
		if c.rxBig > 0 {
			jumbo++
		}
		c.mu.Unlock()
	}
	t.Logf("%d of %d connections and clones buffer jumbo packets", jumbo, len(all))
	if mtu == 0 && jumbo == 0 {
		t.Fatal("no attacker's window held a jumbo packet")
	}
	defer func() {
		// Closed, the attackers' connections give back all they were
		// charged.
		for _, c := range all {
			c.teardown(post.ErrClosed, false)
			checkRx(t, c)
		}
		waitUntil(t, "budget back to zero", func() bool { return l.Stats().Committed == 0 })
	}()
	t.Logf("%+v; %d attacker dials refused, %d packets dropped for want of budget; heap %s before, %s once the attackers were gone",
		st, refused, dropped, attack.MiB(before), attack.MiB(heap))
	if st.Peak > st.Budget || st.Committed > st.Budget || st.Buffered > st.Committed {
		t.Fatalf("over budget: %+v", st)
	}
	if dropped == 0 {
		t.Fatal("no packet was dropped for want of budget")
	}
	// Under the race detector the reading moves by more than a MiB from
	// run to run (once 8.0 MiB over the start, in 1 of 16 runs): the
	// accounting above still bounds it there.
	if heap > before+budget && attack.Slowdown == 1 {
		t.Fatalf("the server holds %s of heap, over its %s budget", attack.MiB(heap-before), attack.MiB(budget))
	}
}

// feedData hands c data packet seq, one message of its own; it reports
// whether c kept it.
func feedData(c *Conn, seq uint64) bool {
	p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Flags: wire.FlagEOT, Seq: uint32(seq)}}
	c.mu.Lock()
	defer c.mu.Unlock()
	buf := getBuf()
	kept := c.onData(time.Now(), &p, buf, append((*buf)[:0], "m"...))
	if !kept {
		putBuf(buf)
	}
	return kept
}

// TestHoldRoom: past its base window a connection's buffered packets are
// charged as they come, the gaps before an out-of-order one included, so
// the budget bounds them; a packet without room is dropped
// unacknowledged and the sender's retransmission gets in once there is
// room; the next expected packet always fits; the room goes back to the
// base window when the connection idles.
func TestHoldRoom(t *testing.T) {
	c := fragConn(t)
	b := newBudget(connCharge() + 8*rxCost) // room for the base window and 8 more
	b.share, b.pshare = b.limit, b.limit    // all of it for one peer
	peer := netip.MustParseAddr("192.0.2.1")
	if !b.take(peer, connCharge()) {
		t.Fatal("no room")
	}
	c.mu.Lock()
	c.bud, c.budPeer, c.charged, c.held = b, peer, connCharge(), baseWindow
	c.mu.Unlock()
	first := c.rcv.Expected()
	if feedData(c, first+20) {
		t.Fatal("kept a packet whose gap the budget cannot hold")
	}
	if !feedData(c, first+11) {
		t.Fatal("dropped a packet the budget holds, gap and all")
	}
	if feedData(c, first+12) {
		t.Fatal("kept a packet past the budget")
	}
	for seq := first + 1; seq <= first+10; seq++ {
		if !feedData(c, seq) {
			t.Fatalf("dropped %d inside the room held", seq-first)
		}
	}
	if !feedData(c, first) {
		t.Fatal("dropped the expected packet")
	}
	st := c.Stats()
	if st.BudgetDropped != 2 || b.used != b.limit || c.held != 12 {
		t.Fatalf("%d dropped, %d of %d bytes used, %d packets held", st.BudgetDropped, b.used, b.limit, c.held)
	}
	// Read all twelve: once idle, the room goes back to the base window,
	// and the sender's retransmissions get in.
	ctx := testContext(t)
	for range 12 {
		if _, err := c.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	c.compact()
	held, used := c.held, b.used
	c.mu.Unlock()
	if held != baseWindow || used != connCharge() {
		t.Fatalf("%d packets held, %d bytes used once idle", held, used)
	}
	if !feedData(c, first+12) || !feedData(c, first+20) {
		t.Fatal("the retransmissions were dropped")
	}
	c.teardown(nil, false)
	if b.used != 0 {
		t.Fatalf("%d bytes charged after the close", b.used)
	}
}
