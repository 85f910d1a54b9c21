package fsp

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
)

// TestUnreadPeersVanish: peers that fill the windows of connections and
// clones the application never reads nor accepts, then vanish without a
// goodbye, leave the server's heap within its memory budget while it
// still holds them, and back near where it started, with no connection
// or goroutine left, once its idle timeout has ended them.
func TestUnreadPeersVanish(t *testing.T) {
	const budget = 8 << 20
	scfg, ccfg := pair(t)
	scfg.MemoryBudget, scfg.IdleTimeout = budget, time.Second
	ccfg.SendBuffer = 128 << 10
	heap := attack.LiveHeap // two collections: a sync.Pool keeps its buffers through one
	l := listen(t, scfg)
	goroutines := runtime.NumGoroutine()
	before := heap()
	ctx := testContext(t)
	sctx, stop := context.WithCancel(ctx)
	defer stop()

	// The application accepts the connections, keeps them and never
	// reads them; their clones it never accepts.
	var accepted []*Conn
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			s, err := l.Accept(sctx)
			if err != nil {
				return
			}
			accepted = append(accepted, s)
		}
	}()

	var aborts []func()
	var senders sync.WaitGroup
	msg := randBytes(64 << 10)
	for i := range 4 {
		src := netip.AddrFrom4([4]byte{127, byte(9 + i), 0, 2}) // one per /24
		for range attack.Paced(4) {
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
			if err != nil {
				t.Skipf("no loopback address %v: %v", src, err)
			}
			tr := &Transport{Conn: pc}
			aborts = append(aborts, func() { pc.Close(); tr.Close() })
			c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(addrOf(l)), ccfg)
			if err != nil {
				t.Fatalf("dial %d: %v; %+v", len(aborts), err, l.Stats())
			}
			if err := sendOnForks(ctx, sctx, c, 3, msg, &senders); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer func() {
		for _, abort := range aborts {
			abort()
		}
	}()

	// Until the windows are full: the committed bytes stop growing.
	var last int64
	for stable, end := 0, time.Now().Add(20*time.Second); stable < 6; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the listener's commitment still growing after 20 s: %+v", l.Stats())
		}
		if c := l.Stats().Committed; c == last {
			stable++
		} else {
			stable, last = 0, c
		}
	}
	full := heap()
	st := l.Stats()
	stop()
	for _, abort := range aborts {
		abort()
	}
	senders.Wait()
	held := heap()
	if held > before+budget {
		t.Errorf("the server holds %s of heap for its vanished peers, over its %s budget", attack.MiB(held-before), attack.MiB(budget))
	}

	// The idle timeout ends every connection and clone.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		s := l.Stats()
		if s.Conns == 0 && s.Committed == 0 && s.Unaccepted == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("10 s after the peers vanished the listener still holds %+v", s)
		}
	}
	<-acceptDone
	// Still held by the application, the ended connections keep nothing.
	after := heap()
	runtime.KeepAlive(accepted)
	t.Logf("heap %s before, %s with %d connections and clones full (%s committed), %s once the peers vanished, %s after the idle timeout",
		attack.MiB(before), attack.MiB(full), st.Conns, attack.MiB(uint64(st.Committed)), attack.MiB(held), attack.MiB(after))
	if after > before+1<<20 {
		t.Errorf("heap %s after the idle timeout ended every connection, %s before", attack.MiB(after), attack.MiB(before))
	}
	for end := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > goroutines+1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d goroutines, %d before the peers came", runtime.NumGoroutine(), goroutines)
		}
	}
}

// sendOnForks forks n clones of c and starts a sender on c and on each
// clone that sends msg until sctx ends. It returns the first Fork error;
// c and the clones made before it send anyway.
func sendOnForks(ctx, sctx context.Context, c *Conn, n int, msg []byte, senders *sync.WaitGroup) error {
	conns := []*Conn{c}
	var err error
	for range n {
		var f *Conn
		if f, err = c.Fork(ctx); err != nil {
			break
		}
		conns = append(conns, f)
	}
	for _, c := range conns {
		senders.Go(func() {
			for c.SendMessage(sctx, msg) == nil {
			}
		})
	}
	return err
}
