package fsp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// capConn drops datagrams larger than the current cap, as a path whose
// MTU is smaller would, and records the largest data datagram it passed
// after a fall (below the cap, fragments aside).
type capConn struct {
	*hookConn
	cap          atomic.Int64
	largestAfter atomic.Int64 // largest data datagram sent while the cap was lowered
}

func newCapConn(t *testing.T, c int) *capConn { return capConnOver(mustUDP(t), c) }

// capConnOver wraps pc in a capConn with cap c.
func capConnOver(pc net.PacketConn, c int) *capConn {
	cc := &capConn{}
	cc.cap.Store(int64(c))
	cc.hookConn = &hookConn{PacketConn: pc, onWrite: func(b []byte, send func([]byte)) {
		if int64(len(b)) > cc.cap.Load() {
			return
		}
		send(b)
	}}
	return cc
}

// capPair connects a client and a server whose sockets drop what exceeds
// their caps.
func capPair(t *testing.T, c int) (cli, srv *Conn, cc, sc *capConn) {
	cc, sc = newCapConn(t, c), newCapConn(t, c)
	cli, srv = capPairOver(t, cc, sc)
	return cli, srv, cc, sc
}

// capPairOver connects a client on cc to a server on sc.
func capPairOver(t *testing.T, cc, sc *capConn) (cli, srv *Conn) {
	t.Helper()
	scfg, ccfg := pair(t)
	cli, srv, _ = pairOver(t, &Transport{Conn: sc}, &Transport{Conn: cc}, scfg, ccfg)
	return cli, srv
}

// searchDone transfers data from s to c until s completed its path MTU
// search (probes are sent only with data to send), at most 20 s, and
// returns the size found.
func searchDone(t *testing.T, s, c *Conn) int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		transferMid(t, s, c, 1<<20, func() {})
		s.mu.Lock()
		done, mtu := !s.pmtu.raiseAt.IsZero(), s.plpmtu()
		s.mu.Unlock()
		if done {
			return mtu
		}
		if time.Now().After(deadline) {
			t.Fatalf("search not complete; PathMTU %d", s.PathMTU())
		}
	}
}

// TestPMTUDProbeUp: on paths that carry 1,452-byte datagrams, and
// 1,350-byte ones, the sender finds the most the path takes (within the
// search's granularity) and sends its data packets at that size.
func TestPMTUDProbeUp(t *testing.T) {
	for _, limit := range []int{MaxDatagramSize, 1350} {
		c, s, _, _ := capPair(t, limit)
		mtu := searchDone(t, s, c)
		if mtu > limit || mtu < limit-pmtuStep {
			t.Fatalf("path of %d bytes: PathMTU %d", limit, mtu)
		}
		// (A spurious probe timeout on a loaded host may have restarted
		// the search since; the sizes reported are never above it.)
		if ps := s.Paths(); ps[0].MTU > mtu {
			t.Fatalf("Paths()[0].MTU = %d, PathMTU %d", ps[0].MTU, mtu)
		}
		if got := (&transient{c: s}).Path().MTU; got > mtu {
			t.Fatalf("post.Path MTU %d", got)
		}
		t.Logf("path of %d bytes: PathMTU %d", limit, mtu)
	}
}

// TestPMTUDBlackHole: the path stops carrying datagrams larger than
// BaseDatagramSize in the middle of a transfer, silently. The sender
// detects the black hole, falls back to the base size, resends what was
// packetized larger in fragments, and the transfer completes intact;
// the search afterwards finds no more than the base.
func TestPMTUDBlackHole(t *testing.T) {
	c, s, cc, sc := capPair(t, MaxDatagramSize)
	transferMid(t, s, c, 4<<20, func() {
		cc.cap.Store(BaseDatagramSize)
		sc.cap.Store(BaseDatagramSize)
	})
	// On a fast host the rest of the transfer may have left before the
	// fall: send more until large packets meet it (a bound, not a timing).
	for range 10 {
		if s.PathMTU() == BaseDatagramSize {
			break
		}
		transferMid(t, s, c, 1<<20, func() {})
	}
	s.mu.Lock()
	holes := s.pmtu.blackHoles
	s.mu.Unlock()
	if mtu := s.PathMTU(); mtu != BaseDatagramSize || holes == 0 {
		t.Fatalf("after the fall: PathMTU %d, %d black holes", mtu, holes)
	}
	pingPong(t, c, s)
}

// TestPMTUDResumeSearch: after a black hole the search starts again, so
// a path that carries large packets again is used at its size.
func TestPMTUDResumeSearch(t *testing.T) {
	c, s, _, _ := capPair(t, MaxDatagramSize)
	transferMid(t, s, c, 1<<20, func() {})
	s.mu.Lock()
	s.pmtuFallBack() // a false alarm
	s.mu.Unlock()
	if mtu := s.PathMTU(); mtu != BaseDatagramSize {
		t.Fatalf("after the alarm: PathMTU %d", mtu)
	}
	if mtu := searchDone(t, s, c); mtu != MaxDatagramSize {
		t.Fatalf("PathMTU %d after searching again", mtu)
	}
}

// TestPMTUDSearch: the sizes probed converge on the path's MTU.
func TestPMTUDSearch(t *testing.T) {
	for _, path := range []int{BaseDatagramSize, 1240, 1252, 1300, 1400, 1451, MaxDatagramSize} {
		var pm pmtud
		probes := 0
		for size := pm.next(); size != 0; size = pm.next() {
			if probes++; probes > 20 {
				t.Fatalf("path %d: no end", path)
			}
			if size <= max(pm.size, BaseDatagramSize) || size > MaxDatagramSize {
				t.Fatalf("path %d: probe of %d at %d", path, size, pm.size)
			}
			if size <= path {
				pm.size = size
			} else {
				pm.tooBig = size
			}
		}
		got := max(pm.size, BaseDatagramSize)
		if got > path || got < min(path, MaxDatagramSize)-pmtuStep {
			t.Fatalf("path %d: found %d after %d probes", path, got, probes)
		}
	}
	// After a black hole the size it fell from is tried first, once.
	pm := pmtud{retry: 1348}
	if a, b := pm.next(), pm.next(); a != 1348 || b != MaxDatagramSize {
		t.Fatalf("probes %d, %d after a black hole", a, b)
	}
}

// fragConn returns an established connection (keys of its own) to feed
// fragments directly.
func fragConn(t testing.TB) *Conn {
	tr := &Transport{Conn: &nullConn{done: make(chan struct{})}}
	tr.init()
	t.Cleanup(func() { tr.Close() })
	c := newConn(tr, &Config{IdleTimeout: time.Hour, KeepAlive: -1}, false, peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")})
	c.local, c.peer, c.peerKnown = 0x30000, 0x20000, true
	c.master = make([]byte, 32)
	c.installKeys()
	c.mu.Lock()
	c.establish(time.Now())
	c.mu.Unlock()
	return c
}

// feedFragment hands c one fragment of sequence number seq.
func feedFragment(c *Conn, seq uint64, flags uint8, off, total int, data []byte) {
	p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Flags: flags, Seq: uint32(seq)},
		HasFragment: true, FragOffset: uint16(off), FragTotal: uint16(total)}
	c.mu.Lock()
	buf := getBuf()
	pt := append((*buf)[:0], data...)
	if !c.onData(time.Now(), &p, buf, pt) {
		putBuf(buf)
	}
	c.mu.Unlock()
}

// TestDataFragments: fragments out of order, repeated and overlapping
// make the payload whole, and its sequence number is delivered once.
func TestDataFragments(t *testing.T) {
	c := fragConn(t)
	msg := randBytes(MaxPayload)
	first := c.rcv.Expected()
	// Sequence number first+1 completes before first.
	feedFragment(c, first+1, wire.FlagEOT, 600, 700, []byte("-tail"))
	feedFragment(c, first+1, wire.FlagEOT, 0, 700, bytes.Repeat([]byte("x"), 600))
	feedFragment(c, first+1, wire.FlagEOT, 605, 700, bytes.Repeat([]byte("y"), 95))
	feedFragment(c, first, 0, 1000, MaxPayload, msg[1000:])
	feedFragment(c, first, 0, 1000, MaxPayload, msg[1000:]) // a copy
	feedFragment(c, first, 0, 500, MaxPayload, msg[500:1100])
	if c.rcv.Expected() != first {
		t.Fatal("delivered with bytes missing")
	}
	feedFragment(c, first, 0, 0, MaxPayload, msg[:500])
	ctx := testContext(t)
	got, err := c.ReceiveMessage(ctx)
	want := append(append(append([]byte(nil), msg...), bytes.Repeat([]byte("x"), 600)...), "-tail"...)
	want = append(want, bytes.Repeat([]byte("y"), 95)...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d: %v", len(got), len(want), err)
	}
	// A fragment of a delivered sequence number changes nothing.
	feedFragment(c, first, 0, 0, MaxPayload, msg[:500])
	if len(c.frags.parts) != 0 || c.rcv.Expected() != first+2 {
		t.Fatalf("%d partial, expected %d", len(c.frags.parts), c.rcv.Expected())
	}
}

// TestDataFragmentsBounded: at most maxPartials sequence numbers are
// reassembled at once, those nearest delivery kept.
func TestDataFragmentsBounded(t *testing.T) {
	c := fragConn(t)
	first := c.rcv.Expected()
	for i := range 3 * maxPartials {
		feedFragment(c, first+uint64(3*maxPartials-i), 0, 0, 100, []byte("half"))
	}
	if len(c.frags.parts) != maxPartials {
		t.Fatalf("%d partial", len(c.frags.parts))
	}
	for _, p := range c.frags.parts {
		if p.seq > first+maxPartials {
			t.Fatalf("kept %d", p.seq-first)
		}
	}
	c.teardown(nil, false)
	if len(c.frags.parts) != 0 {
		t.Fatal("partials kept after the connection closed")
	}
}

// TestDataFragmentsBudget: past the first, partial sequence numbers are
// charged to the listener's budget; without room there is only one, and
// data still arrives one sequence number at a time.
func TestDataFragmentsBudget(t *testing.T) {
	c := fragConn(t)
	c.bud, c.held = newBudget(1), baseWindow // full but for the base window, as admitted
	first := c.rcv.Expected()
	feedFragment(c, first, wire.FlagEOT, 0, 8, []byte("more"))
	feedFragment(c, first+1, 0, 0, 100, []byte("half")) // farther: dropped
	if len(c.frags.parts) != 1 || c.frags.parts[0].seq != first || c.frags.charged {
		t.Fatalf("%d partial", len(c.frags.parts))
	}
	feedFragment(c, first, wire.FlagEOT, 4, 8, []byte("left"))
	if m, err := c.ReceiveMessage(testContext(t)); err != nil || string(m) != "moreleft" {
		t.Fatal(string(m), err)
	}
}

// FuzzDataFragments feeds arbitrary fragments: nothing panics, the
// partial table stays bounded, and a whole payload is delivered with
// the bytes its fragments carried.
func FuzzDataFragments(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 10, 'a'}, []byte{0, 0, 1, 0, 10, 'b'})
	f.Add([]byte{1, 0, 200, 1, 0, 'a'}, []byte{0, 0, 0, 0, 1, 'z'})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		c := fragConn(t)
		for _, in := range [][]byte{a, b, a} {
			if len(in) < 5 {
				continue
			}
			seq := c.rcv.Expected() + uint64(in[0]%16)
			off, total := int(in[1])<<8|int(in[2]), int(in[3])<<8|int(in[4])
			if total == 0 || off >= total {
				continue // Parse refuses these
			}
			feedFragment(c, seq, wire.FlagEOT, off, total, in[5:])
			if len(c.frags.parts) > maxPartials {
				t.Fatalf("%d partial", len(c.frags.parts))
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, d := range c.readQ[c.readHead:] {
			if len(d.data) == 0 || len(d.data) > MaxPayload {
				t.Fatalf("delivered %d bytes", len(d.data))
			}
		}
	})
}

// BenchmarkBulkPMTU compares bulk throughput on loopback at the base
// size (probing off) and at the size probing finds (MaxDatagramSize):
//
//	go test -run XXX -bench BulkPMTU -benchtime 3s ./psi/fsp
func BenchmarkBulkPMTU(b *testing.B) {
	for _, mode := range []string{"base-1232", "probed-1452"} {
		b.Run(mode, func(b *testing.B) {
			scfg, ccfg := pair(b)
			scfg.DisablePathMTUDiscovery = mode == "base-1232"
			ccfg.DisablePathMTUDiscovery = scfg.DisablePathMTUDiscovery
			l := listen(b, scfg)
			c, s := connect(b, l, ccfg)
			ctx := testContext(b)
			msg := randBytes(bulkMessage)
			// Let the search finish before timing.
			for range 64 {
				go c.SendMessage(ctx, msg)
				if _, err := s.ReceiveMessage(ctx); err != nil {
					b.Fatal(err)
				}
			}
			done := make(chan error, 1)
			b.SetBytes(bulkMessage)
			b.ResetTimer()
			go func() {
				buf := make([]byte, bulkMessage)
				for got := 0; got < b.N; {
					_, end, err := s.ReadMessage(ctx, buf)
					if err != nil {
						done <- err
						return
					}
					if end {
						got++
					}
				}
				done <- nil
			}()
			for range b.N {
				if err := c.SendMessage(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(c.PathMTU()), "pmtu")
			c.mu.Lock()
			b.ReportMetric(float64(c.pmtu.blackHoles), "blackholes")
			b.ReportMetric(float64(c.stats.Probes), "ptos")
			b.ReportMetric(float64(c.stats.PacketsSent)/float64(b.N), "pkts/op")
			c.mu.Unlock()
		})
	}
}

// TestTraceMTU: the trace records the size a probe confirmed and the
// fall of a black hole.
func TestTraceMTU(t *testing.T) {
	dir := t.TempDir()
	scfg, ccfg := pair(t)
	scfg.TraceDir = dir
	cc, sc := newCapConn(t, MaxDatagramSize), newCapConn(t, MaxDatagramSize)
	st, ct := &Transport{Conn: sc}, &Transport{Conn: cc}
	t.Cleanup(func() { ct.Close(); st.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	c, s := dialAccept(t, testContext(t), ct, l, ccfg)
	defer c.Close()
	searchDone(t, s, c)
	s.mu.Lock()
	s.pmtuFallBack()
	s.mu.Unlock()
	s.Abort(nil)
	_, evs := readTrace(t, filepath.Join(dir, fmt.Sprintf("fsp_server_%08x.sqlog", s.local)))
	var got []string
	for _, e := range evs {
		if e.Name == "fsp:mtu_updated" {
			var m mtuEvent
			if err := json.Unmarshal(e.Data, &m); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d>%d %s", m.Old, m.New, m.Trigger))
		}
	}
	// (A probe may confirm the size again before the end.)
	if len(got) < 2 || got[0] != "1232>1452 probe" || !slices.Contains(got, "1452>1232 black_hole") {
		t.Fatalf("fsp:mtu_updated events %q", got)
	}
}

// TestPMTUDIdleProbe: a probe unanswered while the connection has no
// data to send is not counted lost again and again: its size stays a
// candidate.
func TestPMTUDIdleProbe(t *testing.T) {
	c := fragConn(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.initPaths(now)
	c.pmtu.probe, c.pmtu.sentAt, c.pmtu.nonce = MaxDatagramSize, now.Add(-time.Hour), 7
	for range 2 * pmtuMaxProbes {
		c.pmtuTick(now)
	}
	if c.pmtu.losses != 0 || c.pmtu.tooBig != 0 || c.pmtu.probe != MaxDatagramSize {
		t.Fatalf("idle: %d losses, too big %d, probe %d", c.pmtu.losses, c.pmtu.tooBig, c.pmtu.probe)
	}
	if !c.pmtuResponse(7) || c.plpmtu() != MaxDatagramSize {
		t.Fatalf("late answer: PathMTU %d", c.plpmtu())
	}
}

// TestPMTUDClone: a clone starts at its parent's path MTU, without a
// search of its own, and its data arrives.
func TestPMTUDClone(t *testing.T) {
	c, s, _, _ := capPair(t, MaxDatagramSize)
	if mtu := searchDone(t, s, c); mtu != MaxDatagramSize {
		t.Skipf("search ended at %d", mtu) // a spurious black hole on a loaded host
	}
	ctx := testContext(t)
	cl, err := s.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cl.mu.Lock()
	mtu, done := cl.plpmtu(), !cl.pmtu.raiseAt.IsZero()
	cl.mu.Unlock()
	if mtu != MaxDatagramSize || !done {
		t.Fatalf("clone PathMTU %d, search complete %v", mtu, done)
	}
	msg := randBytes(100 << 10)
	go cl.SendMessage(ctx, msg)
	peer, err := c.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if got, err := peer.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("%d bytes: %v", len(got), err)
	}
}

// TestPMTUDBulkAtFoundSize: a bulk writer on a 20 ms path writes far more
// than a round trip's worth before the first probe is answered. Only the
// packets queued before the answer may leave at the base size
// (pmtuHold); the rest of the transfer uses the size found.
func TestPMTUDBulkAtFoundSize(t *testing.T) {
	scfg, ccfg := pair(t)
	var base, large atomic.Int64
	cc := &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		switch len(b) {
		case BaseDatagramSize:
			base.Add(1)
		case MaxDatagramSize:
			large.Add(1)
		}
		p := bytes.Clone(b)
		time.AfterFunc(20*time.Millisecond, func() { send(p) })
	}}
	st, ct := &Transport{Conn: mustUDP(t)}, &Transport{Conn: cc}
	t.Cleanup(func() { ct.Close(); st.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, srv := dialAccept(t, testContext(t), ct, l, ccfg)
	t.Cleanup(func() { cli.Close(); srv.Close() })
	const total = 2 << 20
	transferMid(t, cli, srv, total, func() {})
	t.Logf("datagrams of %d bytes: %d, of %d bytes: %d", BaseDatagramSize, base.Load(), MaxDatagramSize, large.Load())
	// The initial window, pmtuAhead, one staged batch and their
	// retransmissions; without the hold, all 1,800 or so.
	if n := base.Load(); n > 6*pmtuAhead {
		t.Errorf("%d of the %d MiB's datagrams sent at the base size", n, total>>20)
	}
}
