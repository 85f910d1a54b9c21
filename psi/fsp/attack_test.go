package fsp

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/attack"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// The rows of the issue 10 table that forge FSP packets, run by the
// harness of internal/attack: a legitimate client dials ten times a second
// during each attack. The other rows are in internal/attack/cases.

var attackDuration = flag.Duration("attack.duration", 2*time.Second, "how long each attack runs")

// attackListener listens with the test certificate and accepts and
// closes every connection, but those keep wants; dial is one legitimate
// dial from 127.0.0.1.
func attackListener(t *testing.T, keep func(*Conn) bool) (l *Listener, ccfg *Config, dial func(context.Context) error) {
	scfg, ccfg := pair(t)
	ccfg.HandshakeTimeout = 3 * time.Second
	l = listen(t, scfg)
	go func() {
		for {
			c, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			if keep == nil || !keep(c) {
				go c.Close()
			}
		}
	}()
	dial = func(ctx context.Context) error {
		c, err := dialUDP(ctx, loopback, addrOf(l), ccfg)
		if err != nil {
			return err
		}
		go c.Close()
		return nil
	}
	return l, ccfg, dial
}

// runAttack runs c, logs the figures as a row for docs/security.md and
// asserts them unless open names a fix that has not landed.
func runAttack(t *testing.T, c attack.Case, open string) *attack.Result {
	t.Helper()
	return runAttackWith(t, c, attack.Options{}, open)
}

// runAttackWith is runAttack with options o; their duration and
// baseline are set here.
func runAttackWith(t *testing.T, c attack.Case, o attack.Options, open string) *attack.Result {
	t.Helper()
	o.Baseline = 500 * time.Millisecond
	if o.Duration == 0 {
		o.Duration = *attackDuration
	}
	r := attack.Run(c, o)
	t.Logf("ROW %s", r.Row())
	t.Logf("%s", r)
	if open != "" {
		t.Skipf("open, not asserted: %s", open)
	}
	r.Assert(t)
	return r
}

func udpFrom(t *testing.T, a netip.Addr) *net.UDPConn {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: a.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// cpuPer reports the process CPU time per packet sent during an attack
// (the attacker's own sending included).
func cpuPer(start time.Duration, packets int64) string {
	if packets == 0 {
		return "no packets"
	}
	return fmt.Sprintf("%d packets, %.1f µs of CPU each (sender included)",
		packets, float64(attack.CPU()-start)/float64(packets)/1e3)
}

// TestAttackConnectRequestFlood: one address completes the cookie
// exchange as fast as the listener answers and never confirms, while the
// client dials from the same /24 and from another.
func TestAttackConnectRequestFlood(t *testing.T) {
	t.Run("same /24", func(t *testing.T) {
		connectRequestFlood(t, netip.MustParseAddr("127.0.0.1"), "")
	})
	t.Run("other /24", func(t *testing.T) { connectRequestFlood(t, netip.MustParseAddr("127.1.0.1"), "") })
}

func connectRequestFlood(t *testing.T, from netip.Addr, open string) {
	pcs := []*net.UDPConn{udpFrom(t, netip.MustParseAddr("127.0.0.10"))}
	connectRequestFloodFrom(t, from, pcs, "127.0.0.10", 0, 32<<20, attack.Options{}, open)
}

// TestAttackConnectRequestFloodPrefixes: the flood of
// TestAttackConnectRequestFlood from 4 addresses in each of 64 /24
// prefixes, more valid requests a second than the handshake workers
// serve, so the queue in front of them stays full, while the client dials
// from a prefix of its own. Each address sends up to 40 requests a second
// (and as many INIT_CONNECTs), each only once the listener answered the
// last (floodCookies): a flood of packets faster than the socket is read
// is a volumetric attack that no listener logic answers.
//
// The workers serve the prefixes in turn, so the client's request waits
// for one handshake of every other prefix: 64 times a handshake's CPU,
// which the race detector multiplies. A slower build (attack.Paced)
// floods from fewer prefixes, which still keep their queues full.
func TestAttackConnectRequestFloodPrefixes(t *testing.T) {
	prefixes := attack.Paced(64)
	var pcs []*net.UDPConn
	for p := range prefixes {
		for h := range 4 {
			pcs = append(pcs, udpFrom(t, netip.AddrFrom4([4]byte{127, 3, byte(p), byte(1 + h)})))
		}
	}
	connectRequestFloodFrom(t, netip.MustParseAddr("127.0.0.1"), pcs,
		fmt.Sprintf("4 addresses in each of %d /24 prefixes", prefixes), 40, 64<<20, prefixesOptions(), "")
}

// prefixesOptions runs TestAttackConnectRequestFloodPrefixes for at least
// 3 s, the client dialling after the first, once the flood has queued
// more handshakes than slow workers serve in a dial's timeout (the race
// detector on a loaded host: over 100, served 20 to 60 a second), so
// that without fair workers the client times out behind them. The
// client keeps at most 2 dials in flight: its prefix gets one handshake
// in every 65 (9 with the race detector), and at 10 dials a second it
// asked for more than that once the workers were slow, so its dials
// queued behind its own and timed out, fair workers or not.
func prefixesOptions() attack.Options {
	d := max(*attackDuration, 3*time.Second)
	return attack.Options{Duration: d, Warmup: d / 3, InFlight: 2}
}

// budget bounds the heap's growth: the full pending table (4,096 entries)
// and the attackers' own sockets, in the same process.
func connectRequestFloodFrom(t *testing.T, from netip.Addr, pcs []*net.UDPConn, attackers string, perSec int, budget uint64, o attack.Options, open string) {
	l, ccfg, _ := attackListener(t, nil)
	dial := func(ctx context.Context) error {
		c, err := dialUDP(ctx, netip.AddrPortFrom(from, 0), addrOf(l), ccfg)
		if err != nil {
			return err
		}
		go c.Close()
		return nil
	}
	var requests atomic.Int64
	c := attack.Case{
		Name:   "FSP CONNECT_REQUEST flood with valid cookies from " + attackers + ", client at " + from.String(),
		Budget: budget,
		Dial:   dial,
		Attack: func(ctx context.Context, b *attack.Bytes) {
			var wg sync.WaitGroup
			for i, pc := range pcs {
				wg.Go(func() { floodCookies(ctx, pc, l.Addr(), uint32(0x100000+i<<20), perSec, b, &requests) })
			}
			wg.Wait()
		},
		Check: func() (string, error) {
			return fmt.Sprintf("%d valid CONNECT_REQUESTs, %d handshakes pending after", requests.Load(), l.Transport().PendingHandshakes()), nil
		},
	}
	runAttackWith(t, c, o, open)
}

// floodCookies completes the cookie exchange from pc as fast as the
// listener answers (or perSec times a second), with a fresh ALFID each
// time, and never confirms.
//
// It is a closed loop: each exchange answered starts the next, so it
// keeps burst exchanges in flight and sends only as fast as the listener
// reads. An exchange is presumed lost (dropped by a full socket) only
// after floodLost without an answer. A shorter wait (it was 50 ms) made
// the flood volumetric on a listener slowed by the race detector or a
// loaded host: every wait that ran out added an exchange the listener had
// not read yet, so its socket queue, and the client's wait behind it in
// the kernel, grew for as long as the listener was slower than the wait.
func floodCookies(ctx context.Context, pc *net.UDPConn, to net.Addr, next uint32, perSec int, b *attack.Bytes, requests *atomic.Int64) {
	start := time.Now()
	var sent int
	kp, _ := fcrypto.NewKeyPair()
	// Only INIT_CONNECT and its answers count for amplification:
	// the cookie in CONNECT_REQUEST proves the address.
	send := func(p []byte, counted bool) {
		if _, err := pc.WriteTo(p, to); err == nil && counted {
			b.Sent(len(p))
		}
	}
	inFlight := map[uint32]bool{} // the ALFIDs of INIT_CONNECTs not answered yet
	init := func() {
		p := wire.Packet{Header: wire.Header{Opcode: wire.InitConnect, Src: next}}
		send(handshakePacket(nil, fcrypto.HandshakeKey(nil, next), &p, floodNonce), true)
		inFlight[next] = true
		next++
	}
	burst := 32 // INIT_CONNECTs in flight
	if perSec > 0 {
		burst = 1
	}
	for range burst {
		init()
	}
	answered := time.Now()
	buf := make([]byte, maxHandshakeSize)
	var pkt wire.Packet
	for ctx.Err() == nil {
		deadline := time.Now().Add(50 * time.Millisecond) // to see ctx end
		if lost := answered.Add(floodLost); lost.Before(deadline) {
			deadline = lost
		}
		pc.SetReadDeadline(deadline)
		n, err := pc.Read(buf)
		if err != nil {
			if time.Since(answered) >= floodLost {
				clear(inFlight) // lost; a late answer still gets its CONNECT_REQUEST
				for range burst {
					init()
				}
				answered = time.Now()
			}
			continue
		}
		if n > 1 && wire.Opcode(buf[1]) != wire.AckConnectReq {
			b.Recv(n)
		}
		if wire.Parse(buf[:n], &pkt) != nil || pkt.Opcode != wire.AckInitConnect || len(pkt.Payload) < fcrypto.CookieLen {
			continue
		}
		alfid := pkt.Dst
		req := wire.Packet{Header: wire.Header{Opcode: wire.ConnectRequest, Src: alfid},
			HasParam: true, Param: wire.ConnectParam{Window: 64}, EphemeralKey: kp.Public[:]}
		send(handshakePacket(nil, fcrypto.HandshakeKey(nil, alfid), &req,
			append(append([]byte(nil), pkt.Payload[:fcrypto.CookieLen]...), floodNonce...)), false)
		requests.Add(1)
		if !inFlight[alfid] {
			continue // one presumed lost: its replacement is in flight
		}
		delete(inFlight, alfid)
		answered = time.Now()
		if sent++; perSec > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(sent) * time.Second / time.Duration(perSec))))
		}
		init()
	}
}

// floodLost is how long floodCookies waits for an answer before it
// presumes its exchanges lost: longer than a loaded listener takes to
// read the queue the closed loop keeps (the flood's own packets, two an
// address, and the client's).
const floodLost = time.Second

// TestAttackUnknownALFID: 28-byte packets to ALFIDs nobody holds.
func TestAttackUnknownALFID(t *testing.T) {
	l, _, dial := attackListener(t, nil)
	pc := udpFrom(t, netip.MustParseAddr("127.0.0.11"))
	var sent int64
	var cpu time.Duration
	c := attack.Case{
		Name:   "FSP 28-byte packets to unknown ALFIDs",
		Budget: 32 << 20,
		Dial:   dial,
		Attack: func(ctx context.Context, b *attack.Bytes) {
			cpu = attack.CPU()
			i := uint32(0)
			sent = int64(attack.UDPFlood(ctx, pc, addrOf(l), 0, func() []byte {
				i++
				p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Dst: 0x7000000 + i, Src: 0x20000 + i, PN: i}}
				return wire.AppendHeader(nil, &p)
			}, nil, b))
		},
		Check: func() (string, error) { return cpuPer(cpu, sent), nil },
	}
	r := runAttack(t, c, "")
	if r.MinPacket != wire.HeaderLen {
		t.Fatalf("sent %d-byte packets", r.MinPacket)
	}
}

// forgedFlood floods a live connection with packets made by forge and
// checks that it still carries a message afterwards.
func forgedFlood(t *testing.T, name string, forge func(s, c *Conn, i uint32) []byte, open string) {
	cpc := mustUDP(t)
	victim := make(chan *Conn, 1)
	sl, ccfg, dial := attackListener(t, func(s *Conn) bool {
		if s.RemoteAddr().String() != cpc.LocalAddr().String() {
			return false
		}
		victim <- s
		return true
	})
	tr := &Transport{Conn: cpc}
	t.Cleanup(func() { tr.Close() })
	ctx := testContext(t)
	c, err := tr.Dial(ctx, sl.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// The responder learns of the connection from the first protected
	// packet.
	go c.SendMessage(ctx, []byte("hello"))
	s := <-victim
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "hello" {
		t.Fatal(m, err)
	}
	pc := udpFrom(t, netip.MustParseAddr("127.0.0.12"))
	var sent int64
	var cpu time.Duration
	st := s.Stats()
	dropped := st.PacketsDropped + st.QueueDropped
	kernel := sockio.Drops(s.t.udp)
	ca := attack.Case{
		Name:   name,
		Budget: 32 << 20,
		Dial:   dial,
		Attack: func(ctx context.Context, b *attack.Bytes) {
			cpu = attack.CPU()
			i := uint32(0)
			sent = int64(attack.UDPFlood(ctx, pc, addrOf(sl), 0, func() []byte {
				i++
				return forge(s, c, i)
			}, nil, b))
		},
		Check: func() (string, error) {
			note := cpuPer(cpu, sent)
			s.t.settle() // the connection's loop has taken what was queued
			st := s.Stats()
			d := int64(st.PacketsDropped + st.QueueDropped - dropped)
			// A loaded host's socket overflows under the flood: those
			// never reached anything. Every other one must have reached
			// the connection, and a good share of them did.
			k := int64(sockio.Drops(s.t.udp) - kernel)
			note += fmt.Sprintf(", %d dropped by the connection, %d by the kernel", d, k)
			if d+k < sent*9/10 || d < sent/4 {
				return note, fmt.Errorf("only %d of %d forged packets reached the connection and were dropped (%d dropped by the kernel)", d, sent, k)
			}
			go c.SendMessage(ctx, []byte("after"))
			if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "after" {
				return note, fmt.Errorf("the connection did not survive: %v", err)
			}
			return note, nil
		},
	}
	runAttack(t, ca, open)
}

// TestAttackRandomPacketNumbers: packets with random packet numbers to a
// live connection.
func TestAttackRandomPacketNumbers(t *testing.T) {
	forgedFlood(t, "FSP random packet numbers to a live connection", func(s, c *Conn, i uint32) []byte {
		return forgedData(s, wire.PureData, c.LocalALFID(), binary.BigEndian.Uint32(randBytes(4)))
	}, "")
}

// TestAttackForgedMultiply: MULTIPLY packets that do not authenticate.
func TestAttackForgedMultiply(t *testing.T) {
	forgedFlood(t, "FSP forged MULTIPLY", func(s, c *Conn, i uint32) []byte {
		return forgedData(s, wire.Multiply, 0x40000+i, 1)
	}, "")
}

// resetInjector is a client socket an attacker answers first: for every
// INIT_CONNECT and CONNECT_REQUEST the client sends, it injects RESETs as
// if from the server: those an attacker off the path can make (without
// the client's nonce) or, onPath, one under the nonce it read.
type resetInjector struct {
	*net.UDPConn
	onPath   bool
	in       chan rxPacket
	done     chan struct{}
	once     sync.Once
	injected *atomic.Int64
}

type rxPacket struct {
	b    []byte
	addr net.Addr
}

func newResetInjector(pc *net.UDPConn, onPath bool, injected *atomic.Int64) *resetInjector {
	r := &resetInjector{UDPConn: pc, onPath: onPath, in: make(chan rxPacket, 64), done: make(chan struct{}), injected: injected}
	go func() {
		for {
			buf := make([]byte, maxHandshakeSize)
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case r.in <- rxPacket{buf[:n], addr}:
			case <-r.done:
				return
			}
		}
	}()
	return r
}

func (r *resetInjector) WriteTo(b []byte, addr net.Addr) (int, error) {
	var pkt wire.Packet
	if wire.Parse(b, &pkt) == nil && (pkt.Opcode == wire.InitConnect || pkt.Opcode == wire.ConnectRequest) {
		keys := [][]byte{fcrypto.HandshakeKey(nil, pkt.Src), fcrypto.RefusalKey(make([]byte, fcrypto.NonceLen))}
		if r.onPath {
			nonce := pkt.Payload
			if pkt.Opcode == wire.ConnectRequest && len(nonce) >= fcrypto.CookieLen {
				nonce = nonce[fcrypto.CookieLen:]
			}
			if len(nonce) >= fcrypto.NonceLen {
				keys = [][]byte{fcrypto.RefusalKey(nonce[:fcrypto.NonceLen])}
			}
		}
		for _, key := range keys {
			p := wire.Packet{Header: wire.Header{Opcode: wire.Reset, Dst: pkt.Src}}
			select {
			case r.in <- rxPacket{handshakePacket(nil, key, &p, nil), addr}:
				r.injected.Add(1)
			default:
			}
		}
	}
	return r.UDPConn.WriteTo(b, addr)
}

func (r *resetInjector) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-r.in:
		return copy(b, p.b), p.addr, nil
	case <-r.done:
		return 0, nil, net.ErrClosed
	}
}

func (r *resetInjector) Close() error {
	r.once.Do(func() { close(r.done) })
	return r.UDPConn.Close()
}

// TestAttackHandshakeReset: every legitimate dial gets forged RESETs
// before the server's answers.
func TestAttackHandshakeReset(t *testing.T) {
	t.Run("off-path", func(t *testing.T) { handshakeReset(t, false, "") })
	t.Run("on-path", func(t *testing.T) {
		handshakeReset(t, true, "an attacker on the path reads the client's nonce, and a refusal before key agreement cannot be authenticated otherwise (as with a TCP RST or a QUIC Initial CONNECTION_CLOSE)")
	})
}

func handshakeReset(t *testing.T, onPath bool, open string) {
	l, ccfg, _ := attackListener(t, nil)
	var injected atomic.Int64
	var on atomic.Bool
	dial := func(ctx context.Context) error {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		var conn net.PacketConn = pc
		if on.Load() {
			conn = newResetInjector(pc, onPath, &injected)
		}
		tr := &Transport{Conn: conn}
		c, err := tr.Dial(ctx, l.Addr(), ccfg)
		if err != nil {
			conn.Close()
			tr.Close()
			return err
		}
		go func() { c.Close(); conn.Close(); tr.Close() }()
		return nil
	}
	ca := attack.Case{
		Name:   "FSP RESET during the handshake, attacker " + map[bool]string{false: "off", true: "on"}[onPath] + " the path",
		Budget: 32 << 20,
		Dial:   dial,
		Attack: func(ctx context.Context, b *attack.Bytes) {
			on.Store(true)
			<-ctx.Done()
			on.Store(false)
		},
		Check: func() (string, error) {
			return fmt.Sprintf("%d forged RESETs injected", injected.Load()), nil
		},
	}
	runAttack(t, ca, open)
}

// TestAttackStatelessResetFlood: 100-byte packets to ALFIDs nobody holds
// from 32 addresses, each asking for more stateless resets than its
// bound (resetsPerAddr a second), together more than the listener's
// (resetsAll): the resets stay within both bounds (bursts included), the
// rest get the plain RESET, and no answer is larger than its packet.
func TestAttackStatelessResetFlood(t *testing.T) {
	l, _, dial := attackListener(t, nil)
	const addrs = 32
	var pcs []*net.UDPConn
	for i := range addrs {
		pcs = append(pcs, udpFrom(t, netip.AddrFrom4([4]byte{127, 0, 1, byte(1 + i)})))
	}
	var sent, stateless, plain, other atomic.Int64
	var cpu, took time.Duration
	maxPer := make([]atomic.Int64, addrs)
	c := attack.Case{
		Name:   "FSP 100-byte packets to unknown ALFIDs from 32 addresses (stateless resets)",
		Budget: 32 << 20,
		Dial:   dial,
		Attack: func(ctx context.Context, b *attack.Bytes) {
			cpu = attack.CPU()
			start := time.Now()
			var wg sync.WaitGroup
			for k, pc := range pcs {
				wg.Go(func() {
					i := uint32(0)
					n := attack.UDPFlood(ctx, pc, addrOf(l), 200, func() []byte {
						i++
						p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Dst: 0x7000000 + i, Src: 0x20000 + uint32(k)<<16 + i}}
						return append(wire.AppendHeader(nil, &p), make([]byte, 100-wire.HeaderLen)...)
					}, func(r []byte) {
						switch len(r) {
						case wire.StatelessResetLen:
							stateless.Add(1)
							maxPer[k].Add(1)
						case resetLen:
							plain.Add(1)
						default:
							other.Add(1)
						}
					}, b)
					sent.Add(int64(n))
				})
			}
			wg.Wait()
			took = time.Since(start)
		},
		Check: func() (string, error) {
			secs := took.Seconds()
			note := cpuPer(cpu, sent.Load()) + fmt.Sprintf(", %d stateless resets and %d plain RESETs back in %.1f s", stateless.Load(), plain.Load(), secs)
			// The bursts, and what the buckets refilled meanwhile.
			all := int64(resetsAll*(1+secs)) + 1
			per := int64(resetsPerAddr*(1+secs)) + 1
			switch {
			case other.Load() > 0:
				return note, fmt.Errorf("%d answers neither a stateless reset nor a RESET", other.Load())
			case stateless.Load() == 0:
				return note, fmt.Errorf("no stateless reset")
			case stateless.Load() > all:
				return note, fmt.Errorf("%d stateless resets, over the listener's bound %d", stateless.Load(), all)
			}
			for k := range maxPer {
				// Addresses sharing a bucket share its rate.
				if n := maxPer[k].Load(); n > per {
					return note, fmt.Errorf("%d stateless resets to one address, over its bound %d", n, per)
				}
			}
			return note, nil
		},
	}
	runAttack(t, c, "")
}
