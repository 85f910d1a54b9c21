package fsp

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// Attacks before authentication (issue 10): each runs against a real
// listener on loopback.

// flooder completes the cookie exchange from one address as fast as the
// listener answers, with a fresh ALFID each time, and never confirms:
// every CONNECT_REQUEST carries a valid cookie and a valid key.
type flooder struct {
	pc       *net.UDPConn
	to       net.Addr
	requests atomic.Int64 // CONNECT_REQUESTs sent
}

func newFlooder(t *testing.T, from netip.Addr, to net.Addr) *flooder {
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &flooder{pc: pc, to: to}
}

var floodNonce = make([]byte, fcrypto.NonceLen)

func (f *flooder) init(alfid uint32) {
	p := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: alfid}}
	f.pc.WriteTo(handshakePacket(nil, fcrypto.HandshakeKey(nil, alfid), &p, floodNonce), f.to)
}

// floodLoss is when a flooder takes a cookie exchange for lost and
// starts another in its place: long enough that a listener slowed by a
// loaded host is not sent more than the window, which would only measure
// how many datagrams its socket buffer holds.
const floodLoss = 500 * time.Millisecond

// run floods until ctx ends, keeping window cookie exchanges in flight:
// each answered one is followed by its CONNECT_REQUEST and a new
// exchange, and one unanswered for floodLoss is replaced.
func (f *flooder) run(ctx context.Context, base uint32) {
	kp, _ := fcrypto.NewKeyPair()
	const window = 32
	next := base
	inflight := make(map[uint32]time.Time, window) // INITs by ALFID
	fill := func(now time.Time) {
		for alfid, at := range inflight {
			if now.Sub(at) >= floodLoss {
				delete(inflight, alfid)
			}
		}
		for len(inflight) < window {
			f.init(next)
			inflight[next] = now
			next++
		}
	}
	fill(time.Now())
	buf := make([]byte, maxHandshakeSize)
	var pkt wire.Packet
	for ctx.Err() == nil {
		f.pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := f.pc.Read(buf)
		if err != nil {
			fill(time.Now())
			continue
		}
		if wire.Parse(buf[:n], &pkt) != nil || pkt.Opcode != wire.AckInitConnect {
			continue
		}
		alfid := pkt.Dst
		delete(inflight, alfid) // if late, replaced already: requested all the same
		key := fcrypto.HandshakeKey(nil, alfid)
		cookie := pkt.Payload[:fcrypto.CookieLen]
		req := wire.Packet{Header: wire.Header{Opcode: wire.ConnectRequest, Src: alfid},
			HasParam: true, Param: wire.ConnectParam{Window: 64}, EphemeralKey: kp.Public[:]}
		f.pc.WriteTo(handshakePacket(nil, key, &req, append(append([]byte(nil), cookie...), floodNonce...)), f.to)
		f.requests.Add(1)
		fill(time.Now())
	}
}

// sync returns once the listener has read every datagram the flooder
// sent before it: the listener reads its socket in order on one loop, so
// its answer to a later INIT_CONNECT (sent again every 200 ms in case the
// flood overflowed its socket buffer) comes after them. Call it after
// run returned.
func (f *flooder) sync(t *testing.T) {
	t.Helper()
	const alfid = 0xfffffff0
	buf := make([]byte, maxHandshakeSize)
	var pkt wire.Packet
	// An unmeasured safety limit.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		f.init(alfid)
		f.pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, err := f.pc.Read(buf)
			if err != nil {
				break
			}
			if wire.Parse(buf[:n], &pkt) == nil && pkt.Opcode == wire.AckInitConnect && pkt.Dst == alfid {
				return
			}
		}
	}
	t.Fatal("the listener answered no INIT_CONNECT after the flood in 10 s")
}

// TestPendingFloodLegitDials floods the pending table from twenty
// addresses while a client in another prefix dials twenty times, ten a
// second, until the last dial is done: every dial succeeds. The
// addresses share one /24, whose entries stay within the prefix quota,
// or each has its own, and together they overflow a smaller table.
func TestPendingFloodLegitDials(t *testing.T) {
	t.Run("one-prefix", func(t *testing.T) {
		scfg, ccfg := pair(t)
		_, perPrefix, _ := scfg.pendingQuotas()
		pendingFlood(t, scfg, ccfg, perPrefix, func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)}) })
	})
	t.Run("many-prefixes", func(t *testing.T) {
		scfg, ccfg := pair(t)
		scfg.MaxPending = 256
		pendingFlood(t, scfg, ccfg, scfg.MaxPending, func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, byte(10 + i), 1}) })
	})
}

// pendingFlood runs the flood from twenty attacker addresses until full
// handshakes are pending, then dials twenty times while it goes on.
func pendingFlood(t *testing.T, scfg, ccfg *Config, full int, attacker func(int) netip.Addr) {
	const legit = 20
	l := listen(t, scfg)
	tr := l.Transport()
	// An unmeasured safety limit: the flood stops after the last dial.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var floods []*flooder
	for i := range 20 {
		f := newFlooder(t, attacker(i), l.Addr())
		floods = append(floods, f)
		wg.Go(func() { f.run(ctx, uint32(0x100000*(i+1))) })
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			if c, err := l.Accept(ctx); err == nil {
				c.Close()
			}
		}
	})
	// Let the flood fill its share first.
	for tr.PendingHandshakes() < full {
		if ctx.Err() != nil {
			t.Fatalf("the flood filled %d of %d pending handshakes", tr.PendingHandshakes(), full)
		}
		time.Sleep(10 * time.Millisecond)
	}
	requests := func() (n int64) {
		for _, f := range floods {
			n += f.requests.Load()
		}
		return n
	}
	before := requests()
	legitPrefix := netip.MustParsePrefix("127.1.0.0/24")
	var (
		mu         sync.Mutex
		ok         int
		maxPending int
		slowest    time.Duration
		dialers    sync.WaitGroup
	)
	for i := range legit {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		dialers.Go(func() {
			start := time.Now()
			// Bounded by the dial's own HandshakeTimeout (10 s): a
			// client shut out fails, a host too busy to answer at once
			// does not.
			c, err := dialUDP(ctx, netip.MustParseAddrPort("127.1.0.1:0"), addrOf(l), ccfg)
			took := time.Since(start)
			tr.mu.Lock()
			pending := 0
			for p, q := range tr.pending.byPrefix {
				if p != legitPrefix {
					pending = max(pending, len(q))
				}
			}
			tr.mu.Unlock()
			if err == nil {
				c.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Logf("dial %d: %v after %v", i, err, took)
				return
			}
			ok++
			slowest = max(slowest, took)
			maxPending = max(maxPending, pending)
		})
	}
	dialers.Wait()
	reqs := requests() - before
	cancel()
	wg.Wait()
	t.Logf("%d/%d dials succeeded (slowest %v) against %d valid CONNECT_REQUESTs meanwhile; the flood's largest prefix held up to %d pending",
		ok, legit, slowest, reqs, maxPending)
	if ok < legit {
		t.Fatalf("%d of %d legitimate dials succeeded", ok, legit)
	}
	if reqs < int64(full) {
		t.Fatalf("the flood sent only %d requests while the client dialed", reqs)
	}
	if _, perPrefix, _ := scfg.pendingQuotas(); maxPending > perPrefix {
		t.Fatalf("a flooding prefix holds %d pending handshakes", maxPending)
	}
}

// TestPendingQuotas checks whom the pending table evicts: the largest
// holder, and a fresh entry only when the holder is larger than the
// requester.
func TestPendingQuotas(t *testing.T) {
	var pt pendingTable
	cfg := &Config{MaxPending: 10, MaxPendingPerAddress: 3, MaxPendingPerPrefix: 4}
	now := time.Now()
	alfid := uint32(0x10000)
	add := func(addr string) ([]*Conn, bool) {
		t.Helper()
		now = now.Add(time.Millisecond)
		alfid++
		k := pendingKey{netip.AddrPortFrom(netip.MustParseAddr(addr), 1), alfid}
		ev, ok := pt.makeRoom(k.addr.Addr(), now, cfg)
		if ok {
			pt.add(k, &Conn{}, now)
		}
		return ev, ok
	}
	evictedFrom := func(ev []*Conn, want string) {
		t.Helper()
		if len(ev) != 1 || ev[0].pendKey.addr.Addr().String() != want {
			var got []string
			for _, c := range ev {
				got = append(got, c.pendKey.addr.String())
			}
			t.Fatalf("evicted %v, want one of %s", got, want)
		}
	}
	for range 3 {
		add("10.0.0.1")
	}
	// The address quota: its own fresh entries are kept, the request
	// dropped; an old one makes room.
	if ev, ok := add("10.0.0.1"); ok || len(ev) != 0 {
		t.Fatal("a fresh entry of the address was evicted")
	}
	now = now.Add(pendingMinAge)
	ev, _ := add("10.0.0.1")
	evictedFrom(ev, "10.0.0.1")
	add("10.0.0.2")
	// The prefix quota: the prefix's largest address pays, fresh or not.
	ev, ok := add("10.0.0.3")
	evictedFrom(ev, "10.0.0.1")
	ev, ok = add("10.0.0.2")
	evictedFrom(ev, "10.0.0.1")
	// Now .1, .2, .2, .3: .2 is the largest itself and its entries are
	// fresh.
	if ev, ok = add("10.0.0.2"); ok || len(ev) != 0 {
		t.Fatalf("evicted %d for an address as large as any", len(ev))
	}
	// The table: the largest prefix pays.
	for i := range 6 {
		if ev, ok := add(netip.AddrFrom4([4]byte{10, 1, byte(i), 1}).String()); !ok || len(ev) != 0 {
			t.Fatalf("evicted %d entries with room", len(ev))
		}
	}
	ev, ok = add("10.9.0.1")
	if !ok || len(ev) != 1 || pendingPrefix(ev[0].pendKey.addr.Addr()) != netip.MustParsePrefix("10.0.0.0/24") {
		t.Fatalf("a full table evicted %d entries", len(ev))
	}
	// A smaller prefix always gets room.
	for range 2 {
		add("10.0.0.9") // 10.0.0.0/24 is the largest: it pays
	}
	if ev, ok := add("10.1.0.1"); !ok || len(ev) != 1 {
		t.Fatalf("a smaller prefix got no room (%d evicted)", len(ev))
	}
	if pt.len() != 10 {
		t.Fatalf("%d entries", pt.len())
	}
	var all []*Conn
	for _, c := range pt.byKey {
		all = append(all, c)
	}
	for _, c := range all {
		pt.remove(c)
	}
	if pt.len() != 0 || len(pt.perAddr) != 0 || len(pt.byPrefix) != 0 {
		t.Fatalf("left %d entries, %d addresses, %d prefixes", pt.len(), len(pt.perAddr), len(pt.byPrefix))
	}
}

// exchange sends b from pc and returns the sizes of the datagrams that
// came back before the answer to a marker INIT_CONNECT sent after it.
func exchange(t *testing.T, pc *net.UDPConn, to net.Addr, b []byte) []int {
	t.Helper()
	const marker = 0xfffffff0
	pc.WriteTo(b, to)
	m := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: marker}}
	pc.WriteTo(handshakePacket(nil, fcrypto.HandshakeKey(nil, marker), &m, floodNonce), to)
	var sizes []int
	buf := make([]byte, maxHandshakeSize)
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("no answer to the marker: %v", err)
		}
		if n >= wire.HeaderLen && wire.PeekDst(buf[:n]) == marker &&
			(wire.Opcode(buf[1]) == wire.AckInitConnect || wire.Opcode(buf[1]) == wire.Reset) {
			return sizes
		}
		sizes = append(sizes, n)
	}
}

// TestNoAmplification sends every kind of unauthenticated packet to a
// listener with a live connection: nothing that comes back is larger than
// what caused it.
func TestNoAmplification(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	_, s := connect(t, l, ccfg)
	pc := mustUDP(t)
	type probe struct {
		name string
		b    []byte
	}
	var probes []probe
	hdr := func(op wire.Opcode, dst, src uint32, payload int) []byte {
		p := wire.Packet{Header: wire.Header{Opcode: op, Dst: dst, Src: src, PN: 7}}
		return append(wire.AppendHeader(nil, &p), randBytes(payload)...)
	}
	for op := wire.InitConnect; op <= wire.KeepAlive; op++ {
		for _, dst := range []uint32{0, 0x1234567, s.LocalALFID()} {
			for _, n := range []int{0, 1, 15, 16, 17, 40, 200} {
				probes = append(probes, probe{op.String(), hdr(op, dst, 0x20000, n)})
			}
		}
	}
	// Well-formed handshake packets, valid or with a bad cookie.
	in := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: 0x30000}}
	probes = append(probes, probe{"INIT_CONNECT", handshakePacket(nil, fcrypto.HandshakeKey(nil, 0x30000), &in, floodNonce)})
	req := wire.Packet{Header: wire.Header{Opcode: wire.ConnectRequest, Src: 0x30000}, HasParam: true, EphemeralKey: randBytes(32)}
	probes = append(probes, probe{"CONNECT_REQUEST bad cookie", handshakePacket(nil, fcrypto.HandshakeKey(nil, 0x30000), &req, randBytes(fcrypto.CookieLen+fcrypto.NonceLen))})
	// Random bytes that pass the FSP version and opcode check.
	for range 300 {
		b := randBytes(wire.HeaderLen + int(randBytes(1)[0]))
		b[0], b[1] = 0, 1+b[1]%byte(wire.KeepAlive)
		binary.BigEndian.PutUint16(b[2:], wire.HeaderLen)
		if b[5]&1 == 0 {
			binary.BigEndian.PutUint32(b[20:], s.LocalALFID())
		}
		probes = append(probes, probe{"random", b})
	}
	check := func(to net.Addr) (replies int) {
		for _, p := range probes {
			for _, n := range exchange(t, pc, to, p.b) {
				replies++
				if n > len(p.b) {
					t.Errorf("%s of %d bytes got a %d-byte reply", p.name, len(p.b), n)
				}
			}
		}
		return replies
	}
	r := check(l.Addr())
	// A transport whose listener closed refuses handshakes with RESET.
	lt := &Transport{Conn: mustUDP(t)}
	t.Cleanup(func() { lt.Close() })
	l2, err := lt.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
	r += check(lt.Conn.LocalAddr())
	t.Logf("%d probes, %d replies, none larger than its probe", 2*len(probes), r)
}

// TestHandshakeResetNeedsNonce dials a raw socket playing the server: a
// RESET tagged only with the (public) handshake key does not stop the
// dial; one bound to the client's nonce refuses it.
func TestHandshakeResetNeedsNonce(t *testing.T) {
	srv := mustUDP(t)
	ctx := testContext(t)
	_, ccfg := pair(t)
	ccfg.HandshakeTimeout = 5 * time.Second
	errc := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, srv.LocalAddr().(*net.UDPAddr).AddrPort(), ccfg)
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	buf := make([]byte, maxHandshakeSize)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	var pkt wire.Packet
	if err := wire.Parse(buf[:n], &pkt); err != nil || pkt.Opcode != wire.InitConnect {
		t.Fatalf("got %v %v", pkt.Opcode, err)
	}
	alfid := pkt.Src
	nonce := append([]byte(nil), pkt.Payload[:fcrypto.NonceLen]...)
	reset := func(key []byte) {
		p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: alfid}}
		srv.WriteTo(handshakePacket(nil, key, &p, nil), from)
	}
	reset(fcrypto.HandshakeKey(nil, alfid))
	reset(fcrypto.RefusalKey(make([]byte, fcrypto.NonceLen)))
	select {
	case err := <-errc:
		t.Fatalf("a RESET without the nonce ended the dial: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	reset(fcrypto.RefusalKey(nonce))
	select {
	case err := <-errc:
		if !errors.Is(err, post.ErrRefused) {
			t.Fatalf("want ErrRefused, got %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the nonce-bound RESET did not refuse the dial")
	}
}

// forgedData returns a protected-looking packet to conn s with packet
// number pn that does not authenticate.
func forgedData(s *Conn, op wire.Opcode, src uint32, pn uint32) []byte {
	p := wire.Packet{Header: wire.Header{Opcode: op, Dst: s.LocalALFID(), Src: src, PN: pn, Flags: wire.FlagEOT}}
	return append(wire.AppendHeader(nil, &p), randBytes(200)...)
}

// TestForgedEpochKeepsLiveKey sends packets with random packet numbers to
// a live connection: they are dropped without deriving keys for far
// epochs or evicting the live one, and the connection carries on.
func TestForgedEpochKeepsLiveKey(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	if err := c.SendMessage(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReceiveMessage(ctx); err != nil || string(got) != "before" {
		t.Fatal(got, err)
	}
	pc := mustUDP(t)
	before := s.Stats().PacketsDropped
	const forged = 2000
	for i := range forged {
		pc.WriteTo(forgedData(s, wire.PureData, c.LocalALFID(), binary.BigEndian.Uint32(randBytes(4))), l.Addr())
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // stay within the socket buffer
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().PacketsDropped-before < forged*9/10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	rx := s.rx[0]
	live := s.replay.Largest() >> fcrypto.EpochBits
	cached := rx.Cached(live)
	var stray []uint64
	for e := range uint64(4096) {
		if e != live && e != live+1 && rx.Cached(e) {
			stray = append(stray, e)
		}
	}
	s.mu.Unlock()
	if !cached || len(stray) > 0 {
		t.Fatalf("live key cached %v; keys of other epochs %v", cached, stray)
	}
	if err := c.SendMessage(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReceiveMessage(ctx); err != nil || string(got) != "after" {
		t.Fatal(got, err)
	}
	t.Logf("%d forged packets dropped", s.Stats().PacketsDropped-before)
}

// TestForgedMultiplyAllocatesNothing sends MULTIPLY packets that do not
// authenticate: no clone is registered or offered, and each costs a
// small, fixed amount of memory.
func TestForgedMultiplyAllocatesNothing(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	pc := mustUDP(t)
	conns := l.Transport().NumConns()
	before := s.Stats().PacketsDropped
	for i := range 500 {
		pc.WriteTo(forgedData(s, wire.Multiply, 0x40000+uint32(i), 1), l.Addr())
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().PacketsDropped-before < 400 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := l.Transport().NumConns(); n != conns {
		t.Fatalf("%d connections registered, was %d", n, conns)
	}
	actx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if cl, err := s.AcceptFork(actx); err == nil {
		t.Fatalf("a forged MULTIPLY made clone %x", cl.LocalALFID())
	}
	// In process: the bytes one forged MULTIPLY allocates, against a
	// genuine clone.
	b := forgedData(s, wire.Multiply, 0x50000, 1)
	var pkt wire.Packet
	from := peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:9")}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	const runs = 200
	for i := range runs {
		binary.BigEndian.PutUint32(b[24:], 0x50000+uint32(i))
		wire.Parse(b, &pkt)
		if inject(s, b, &from, true) != nil {
			t.Fatal("forged MULTIPLY routed")
		}
	}
	runtime.ReadMemStats(&ms1)
	per := (ms1.TotalAlloc - ms0.TotalAlloc) / runs
	// A genuine clone, for scale.
	runtime.ReadMemStats(&ms0)
	s.mu.Lock()
	cl := s.newClone(0x60000, false)
	s.mu.Unlock()
	runtime.ReadMemStats(&ms1)
	cl.teardown(post.ErrClosed, false)
	clone := ms1.TotalAlloc - ms0.TotalAlloc
	if per >= clone {
		t.Fatalf("a forged MULTIPLY allocates %d bytes, a clone %d", per, clone)
	}
	// A genuine fork still works.
	ctx := testContext(t)
	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.SendMessage(ctx, []byte("clone"))
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if got, err := sf.ReceiveMessage(ctx); err != nil || string(got) != "clone" {
		t.Fatal(got, err)
	}
	t.Logf("a forged MULTIPLY allocates %d transient bytes and registers nothing; a clone allocates %d", per, clone)
}

// BenchmarkForgedMultiply measures dropping a MULTIPLY that does not
// authenticate.
func BenchmarkForgedMultiply(b *testing.B) {
	scfg, ccfg := pair(b)
	l := listen(b, scfg)
	_, s := connect(b, l, ccfg)
	pkt := forgedData(s, wire.Multiply, 0x50000, 1)
	var p wire.Packet
	from := peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:9")}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint32(pkt[24:], 0x50000+uint32(i))
		wire.Parse(pkt, &p)
		inject(s, pkt, &from, true)
	}
}

// sizeConn is a PacketConn that records the largest datagram written.
type sizeConn struct {
	nullConn
	mu      sync.Mutex
	largest int
}

func (s *sizeConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	s.mu.Lock()
	s.largest = max(s.largest, len(b))
	s.mu.Unlock()
	return len(b), nil
}

// FuzzUnauthenticatedReply feeds arbitrary datagrams to a transport with a
// listener and one connection: whatever comes back is no larger than the
// datagram that caused it (a valid cookie, which proves the address,
// cannot be forged by the fuzzer).
func FuzzUnauthenticatedReply(f *testing.F) {
	in := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: 0x20000}}
	f.Add(handshakePacket(nil, fcrypto.HandshakeKey(nil, 0x20000), &in, floodNonce))
	f.Add(handshakePacket(nil, fcrypto.HandshakeKey([]byte("psk"), 0x20000), &in, floodNonce))
	for _, op := range []wire.Opcode{wire.PureData, wire.KeepAlive, wire.Multiply, wire.Reset, wire.Release} {
		for _, dst := range []uint32{0x30000, 0x40000} {
			p := wire.Packet{Header: wire.Header{Opcode: op, Dst: dst, Src: 0x20000}}
			f.Add(wire.AppendHeader(nil, &p))
			f.Add(append(wire.AppendHeader(nil, &p), make([]byte, 16)...))
		}
	}
	sc := &sizeConn{nullConn: nullConn{done: make(chan struct{})}}
	t := &Transport{Conn: sc}
	scfg, _ := pair(f)
	if _, err := t.Listen(scfg); err != nil {
		f.Fatal(err)
	}
	defer t.Close()
	c := newConn(t, &Config{IdleTimeout: 24 * time.Hour, KeepAlive: -1}, false, peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:2")})
	c.local, c.peer, c.peerKnown = 0x30000, 0x20000, true
	t.mu.Lock()
	t.conns[c.local] = c
	t.mu.Unlock()
	c.master = make([]byte, 32)
	c.installKeys()
	c.mu.Lock()
	c.establish(time.Now())
	c.mu.Unlock()
	from := peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:3")}
	var pkt wire.Packet
	f.Fuzz(func(tt *testing.T, b []byte) {
		sc.mu.Lock()
		sc.largest = 0
		sc.mu.Unlock()
		t.handle(b, &from, &pkt)
		t.settle()
		t.foreign.drain()
		sc.mu.Lock()
		largest := sc.largest
		sc.mu.Unlock()
		if largest > len(b) {
			tt.Fatalf("a %d-byte datagram got a %d-byte reply", len(b), largest)
		}
	})
}

// BenchmarkForgedData drops forged data packets at a live connection,
// with the packet number the connection expects and with random ones
// (other key epochs): both cost one failed open, no key derivation.
func BenchmarkForgedData(b *testing.B) {
	for _, name := range []string{"expected-pn", "random-pn"} {
		b.Run(name, func(b *testing.B) {
			scfg, ccfg := pair(b)
			l := listen(b, scfg)
			c, s := connect(b, l, ccfg)
			from := peerAddr{ap: netip.MustParseAddrPort("127.0.0.1:9")}
			var p wire.Packet
			pkt := forgedData(s, wire.PureData, c.LocalALFID(), 100)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				pn := uint32(100 + i)
				if name == "random-pn" {
					pn = uint32(i) * 0x9e3779b9
				}
				binary.BigEndian.PutUint32(pkt[16:], pn)
				wire.Parse(pkt, &p)
				inject(s, pkt, &from, false)
			}
		})
	}
}

// FuzzPendingTable runs random additions, removals and clock steps on a
// small pending table and checks its quotas and bookkeeping.
func FuzzPendingTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x80, 0x41, 7, 7, 7, 7, 7, 0xc0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var pt pendingTable
		cfg := &Config{MaxPending: 12, MaxPendingPerAddress: 3, MaxPendingPerPrefix: 5}
		now := time.Unix(1000, 0)
		var live []*Conn
		for i, op := range ops {
			switch op >> 6 {
			case 0, 1: // add from one of 16 addresses in 4 prefixes
				addr := netip.AddrFrom4([4]byte{10, op >> 2 & 3, 0, op & 3})
				k := pendingKey{netip.AddrPortFrom(addr, 1), uint32(0x10000 + i)}
				ev, ok := pt.makeRoom(addr, now, cfg)
				for _, e := range ev {
					live = slicesDelete(live, e)
				}
				if ok {
					c := &Conn{}
					pt.add(k, c, now)
					live = append(live, c)
				}
			case 2: // remove
				if len(live) > 0 {
					c := live[int(op)%len(live)]
					pt.remove(c)
					live = slicesDelete(live, c)
				}
			case 3:
				now = now.Add(time.Duration(op&63) * 50 * time.Millisecond)
			}
			if pt.len() != len(live) || pt.len() > 12 {
				t.Fatalf("%d entries, %d live", pt.len(), len(live))
			}
			n := 0
			for p, q := range pt.byPrefix {
				if len(q) == 0 || len(q) > 5 {
					t.Fatalf("prefix %v holds %d", p, len(q))
				}
				n += len(q)
			}
			for a, k := range pt.perAddr {
				if k <= 0 || k > 3 {
					t.Fatalf("address %v holds %d", a, k)
				}
			}
			if n != pt.len() {
				t.Fatalf("queues hold %d of %d", n, pt.len())
			}
		}
	})
}

func slicesDelete(s []*Conn, c *Conn) []*Conn {
	return slices.DeleteFunc(s, func(e *Conn) bool { return e == c })
}

// TestReplayedConnectRequest resends a client's CONNECT_REQUEST, cookie
// still good, from the client's address after the handshake completed:
// the listener starts no second handshake (no key exchange, no large
// answer toward the client).
func TestReplayedConnectRequest(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	raw := mustUDP(t)
	var req []byte
	var mu sync.Mutex
	hc := &hookConn{PacketConn: raw, onWrite: func(b []byte, send func([]byte)) {
		if len(b) > 1 && wire.Opcode(b[1]) == wire.ConnectRequest {
			mu.Lock()
			req = append([]byte(nil), b...)
			mu.Unlock()
		}
		send(b)
	}}
	tr := &Transport{Conn: hc}
	t.Cleanup(func() { tr.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, tr, l, ccfg)
	t.Cleanup(func() { c.Close(); s.Close() })
	if err := c.SendMessage(ctx, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReceiveMessage(ctx); err != nil {
		t.Fatal(err)
	}
	conns := l.Transport().NumConns()
	mu.Lock()
	b := req
	mu.Unlock()
	for range 20 {
		raw.WriteTo(b, l.Addr())
	}
	time.Sleep(100 * time.Millisecond)
	if n, p := l.Transport().NumConns(), l.Transport().PendingHandshakes(); n != conns || p != 0 {
		t.Fatalf("replays made %d connections (was %d), %d pending", n, conns, p)
	}
}
