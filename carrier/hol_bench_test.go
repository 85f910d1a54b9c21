package carrier_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// Head-of-line independence: K independent flows of small paced messages
// cross a path that loses 2% of the packets in each direction; the server
// echoes every message and the client records each one's round trip from
// the moment it was handed to Carrier.Send. Two workloads: paced (each
// flow sends every 5 ms whatever happens to earlier messages, so a stall
// delays everything queued behind it) and request/response (at most one
// message outstanding per flow). Each flow runs on its own FSP
// clone or QUIC stream (Carrier.Fork); on TCP+TLS all flows share one
// connection, as HTTP/2 would, so one lost segment stalls them all.
//
// The path is a veth pair between two network namespaces; nftables drops
// packets at random on arrival in either namespace, for TCP and UDP alike.
// There is no added delay (nftables cannot delay and the kernel here may
// lack sch_netem), so the round trip is tens of microseconds and latency
// under loss is dominated by how fast each stack notices and repairs a
// loss; BenchmarkHeadOfLineRTT (Linux) repeats both workloads over a 20 ms
// round trip made by a user-space delay line between TUN devices. The
// benchmarks and the test need root and nft, and skip otherwise.
//
//	go test -run '^$' -bench HeadOfLine -benchtime 2000x ./carrier
//
// An op is one round: one message on every flow. docs/benchmarks-hol.md
// has the results.

const (
	holFlows    = 8
	holMsgSize  = 200
	holInterval = 5 * time.Millisecond // per flow
	holLoss     = 2                    // percent, each direction
	holHeader   = 14                   // flow u16, seq u32, send time i64 (ns since start)
)

var (
	holSrvAddr = netip.MustParsePrefix("10.201.0.1/24")
	holCliAddr = netip.MustParsePrefix("10.201.0.2/24")
)

// holNet is the two namespaces and their link.
type holNet struct {
	srv, cli *netns.NS
	srvAddr  netip.Addr    // the server's address, reachable from cli
	baseRTT  time.Duration // round trip the path adds without loss
}

func newHolNet(tb testing.TB) *holNet {
	tb.Helper()
	if err := netns.Available(); err != nil {
		tb.Skipf("head-of-line measurements need network namespaces (root, iproute2, nftables): %v", err)
	}
	n := &holNet{srv: netns.New(tb, "holsrv"), cli: netns.New(tb, "holcli"), srvAddr: holSrvAddr.Addr()}
	netns.Link(tb, n.srv, n.cli, holSrvAddr, holCliAddr)
	return n
}

// lossy turns the random drops on (percent > 0) or off, in both
// directions: each namespace drops that share of what arrives from the
// other.
func (n *holNet) lossy(percent int) error {
	for _, ns := range []*netns.NS{n.srv, n.cli} {
		if err := ns.ClearDrops(); err != nil {
			return err
		}
		if percent > 0 {
			if err := ns.Drop(percent, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

func holStack(name string, ns *netns.NS) psi.Stack {
	for _, s := range carrier.DefaultStacks() {
		if s.Name() == name {
			return netns.Stack(s, ns)
		}
	}
	panic("no stack " + name)
}

// holSession is one stack's listener, root carriers and flows.
type holSession struct {
	stack    string
	l        *carrier.Listener
	root     *carrier.Carrier   // client root
	srvRoot  *carrier.Carrier   // server root
	flows    []*carrier.Carrier // client carrier of each flow
	readers  []*carrier.Carrier // distinct client carriers to read echoes from
	servers  []*carrier.Carrier // server carriers echoing
	srvErr   chan error
	echoDone sync.WaitGroup
}

// setupHol connects a client in n.cli to a server in n.srv over stack and
// opens the flows; every flow has carried one message each way when it
// returns. The path must be loss-free while it runs.
func setupHol(ctx context.Context, n *holNet, stack string, flows int) (*holSession, error) {
	hs := &holSession{stack: stack, srvErr: make(chan error, flows+1)}
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Stacks = []psi.Stack{holStack(stack, n.srv)}
	ccfg.Stacks = []psi.Stack{holStack(stack, n.cli)}
	scfg.Policy.Stack(stack, policy.Require)
	ccfg.Policy.Stack(stack, policy.Require)
	scfg.Linger, ccfg.Linger = 3*time.Second, 3*time.Second
	var err error
	hs.l, err = carrier.Listen(ctx, post.Local{Addr: netip.AddrPortFrom(n.srvAddr, 0)}, scfg)
	if err != nil {
		return nil, err
	}
	remote := hs.l.Remote(n.srvAddr.String())
	remote.ServerName = "localhost" // the test certificate's name
	if hs.root, err = carrier.Initiate(ctx, remote, ccfg); err != nil {
		hs.close()
		return nil, err
	}
	if err := hs.root.Send(ctx, []byte("hello")); err != nil {
		hs.close()
		return nil, err
	}
	if hs.srvRoot, err = hs.l.Accept(ctx); err != nil {
		hs.close()
		return nil, err
	}
	if m, err := hs.srvRoot.Receive(ctx); err != nil || string(m.Content) != "hello" {
		hs.close()
		return nil, fmt.Errorf("hello: %v", err)
	}
	if got := hs.root.Stack(); got != stack {
		hs.close()
		return nil, fmt.Errorf("stack %s, want %s", got, stack)
	}
	if stack == "tcp" {
		// One connection carries every flow.
		for range flows {
			hs.flows = append(hs.flows, hs.root)
		}
		hs.readers = []*carrier.Carrier{hs.root}
		hs.serve(hs.srvRoot)
	} else {
		accepted := make(chan error, 1)
		go func() {
			for range flows {
				s, err := hs.srvRoot.AcceptFork(ctx)
				if err != nil {
					accepted <- err
					return
				}
				hs.serve(s)
			}
			accepted <- nil
		}()
		for range flows {
			f, err := hs.root.Fork(ctx)
			if err != nil {
				hs.close()
				return nil, fmt.Errorf("fork: %w", err)
			}
			hs.flows = append(hs.flows, f)
			hs.readers = append(hs.readers, f)
			// QUIC peers learn of a stream from its first bytes.
			if err := f.Send(ctx, []byte("hi")); err != nil {
				hs.close()
				return nil, err
			}
		}
		if err := <-accepted; err != nil {
			hs.close()
			return nil, fmt.Errorf("accept fork: %w", err)
		}
		for _, f := range hs.flows {
			if m, err := f.Receive(ctx); err != nil || string(m.Content) != "hi" {
				hs.close()
				return nil, fmt.Errorf("fork echo: %v", err)
			}
		}
	}
	return hs, nil
}

// serve echoes every message s receives, after checking its contents,
// until s fails or closes.
func (hs *holSession) serve(s *carrier.Carrier) {
	hs.servers = append(hs.servers, s)
	hs.echoDone.Add(1)
	go func() {
		defer hs.echoDone.Done()
		ctx := context.Background()
		for {
			m, err := s.Receive(ctx)
			if err != nil {
				return
			}
			if len(m.Content) >= holHeader {
				if err := checkHolMsg(m.Content); err != nil {
					hs.srvErr <- fmt.Errorf("server received: %w", err)
					return
				}
			}
			if err := s.Send(ctx, m.Content); err != nil {
				return
			}
		}
	}()
}

func (hs *holSession) close() {
	var cs []*carrier.Carrier
	cs = append(cs, hs.flows...)
	cs = append(cs, hs.root)
	cs = append(cs, hs.servers...)
	cs = append(cs, hs.srvRoot)
	seen := map[*carrier.Carrier]bool{}
	for _, c := range cs {
		if c != nil && !seen[c] {
			seen[c] = true
			c.Close()
		}
	}
	if hs.l != nil {
		hs.l.Close()
	}
	hs.echoDone.Wait()
}

func holMsg(flow, seq int, sched time.Duration) []byte {
	b := make([]byte, holMsgSize)
	binary.BigEndian.PutUint16(b, uint16(flow))
	binary.BigEndian.PutUint32(b[2:], uint32(seq))
	binary.BigEndian.PutUint64(b[6:], uint64(sched))
	for i := holHeader; i < len(b); i++ {
		b[i] = byte(flow*31 + seq*7 + i)
	}
	return b
}

func checkHolMsg(b []byte) error {
	if len(b) != holMsgSize {
		return fmt.Errorf("message of %d bytes, want %d", len(b), holMsgSize)
	}
	flow, seq := int(binary.BigEndian.Uint16(b)), int(binary.BigEndian.Uint32(b[2:]))
	for i := holHeader; i < len(b); i++ {
		if b[i] != byte(flow*31+seq*7+i) {
			return fmt.Errorf("flow %d message %d corrupt at byte %d", flow, seq, i)
		}
	}
	return nil
}

// holResult holds every message's round trip.
type holResult struct {
	rtts    []time.Duration // sorted
	stalled float64         // percentage more than holStall over the base RTT
	cpu     time.Duration   // the process's CPU time (both ends, the delay line) during the run
	stalls  time.Duration   // how long a 10 ms sleeper overslept, in oversleeps of holStallMin or more
}

// holStallMin is the oversleep of the stall meter's 10 ms sleep that
// counts as a stall of the process: its goroutines got no core (the
// other helpers' load, or a collection) and every stack in it waited.
const holStallMin = 5 * time.Millisecond

// stallMeter measures how long the process went without running a
// sleeping goroutine on time, until stop is closed: host stalls, which
// the in-process delay line shares, are told apart from the protocol's.
func stallMeter(stop <-chan struct{}) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		var total time.Duration
		for {
			t := time.Now()
			select {
			case <-stop:
				out <- total
				return
			case <-time.After(10 * time.Millisecond):
			}
			if over := time.Since(t) - 10*time.Millisecond; over >= holStallMin {
				total += over
			}
		}
	}()
	return out
}

// holStall is the extra round trip that counts a message as stalled.
const holStall = 20 * time.Millisecond

func (r holResult) pct(p float64) time.Duration {
	if len(r.rtts) == 0 {
		return 0
	}
	i := min(int(p*float64(len(r.rtts))), len(r.rtts)-1)
	return r.rtts[i]
}

func (r holResult) String() string {
	return fmt.Sprintf("%d msgs p50 %v p90 %v p99 %v p99.9 %v max %v, %.2f%% stalled; process stalls %v", len(r.rtts),
		r.pct(0.50).Round(time.Microsecond), r.pct(0.90).Round(time.Microsecond),
		r.pct(0.99).Round(time.Microsecond), r.pct(0.999).Round(time.Microsecond),
		r.rtts[len(r.rtts)-1].Round(time.Microsecond), r.stalled, r.stalls.Round(time.Millisecond))
}

// over returns the percentage of messages slower than d.
func (r holResult) over(d time.Duration) float64 {
	i, _ := slices.BinarySearch(r.rtts, d+1)
	return 100 * float64(len(r.rtts)-i) / float64(len(r.rtts))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// holMode is the workload.
type holMode string

const (
	// holPaced sends one message every holInterval on each flow without
	// waiting for echoes (open loop: a stalled flow keeps queueing).
	holPaced holMode = "paced"
	// holRR is request/response: a flow sends its next message once the
	// previous echo is back and its holInterval slot has come, so it has
	// at most one message outstanding.
	holRR holMode = "rr"
)

// run sends rounds messages on every flow, one per holInterval slot with
// the flows' phases spread evenly, and waits for every echo. Each flow's
// echoes must come back intact, once and in order.
func (hs *holSession) run(ctx context.Context, mode holMode, rounds int) (holResult, error) {
	flows := len(hs.flows)
	rtts := make([][]time.Duration, flows)
	for i := range rtts {
		rtts[i] = make([]time.Duration, 0, rounds)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		errs []error
	)
	fail := func(err error) {
		emu.Lock()
		errs = append(errs, err)
		emu.Unlock()
		cancel()
	}
	// In request/response mode a reader hands each flow its echo.
	echoed := make([]chan struct{}, flows)
	for i := range echoed {
		echoed[i] = make(chan struct{}, 1)
	}
	start := time.Now()
	// Readers: one per client carrier, each dispatching by flow.
	perReader := rounds * flows / len(hs.readers)
	for _, rc := range hs.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := make([]int, flows)
			for range perReader {
				m, err := rc.Receive(ctx)
				if err != nil {
					fail(fmt.Errorf("%s: receive: %w", hs.stack, err))
					return
				}
				now := time.Since(start)
				if err := checkHolMsg(m.Content); err != nil {
					fail(fmt.Errorf("%s: echo: %w", hs.stack, err))
					return
				}
				flow, seq := int(binary.BigEndian.Uint16(m.Content)), int(binary.BigEndian.Uint32(m.Content[2:]))
				if flow >= flows || seq != next[flow] {
					fail(fmt.Errorf("%s: flow %d: got message %d, want %d", hs.stack, flow, seq, next[min(flow, flows-1)]))
					return
				}
				next[flow]++
				sched := time.Duration(binary.BigEndian.Uint64(m.Content[6:]))
				rtts[flow] = append(rtts[flow], now-sched)
				if mode == holRR {
					echoed[flow] <- struct{}{}
				}
			}
		}()
	}
	// Senders: one per flow, open loop.
	for f := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			offset := holInterval * time.Duration(f) / time.Duration(flows)
			for seq := range rounds {
				if mode == holRR && seq > 0 {
					select {
					case <-echoed[f]:
					case <-ctx.Done():
						return
					}
				}
				sched := offset + time.Duration(seq)*holInterval
				if d := time.Until(start.Add(sched)); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				// Count from the actual send: timer lateness is not
				// the stack's. Send only queues, so it does not block.
				sched = time.Since(start)
				if err := hs.flows[f].Send(ctx, holMsg(f, seq, sched)); err != nil {
					fail(fmt.Errorf("%s: flow %d send: %w", hs.stack, f, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-hs.srvErr:
		errs = append(errs, fmt.Errorf("%s: %w", hs.stack, err))
	default:
	}
	if err := errors.Join(errs...); err != nil {
		return holResult{}, err
	}
	var all []time.Duration
	for _, r := range rtts {
		all = append(all, r...)
	}
	slices.Sort(all)
	return holResult{rtts: all}, nil
}

// holMeasure sets up stack on n, turns the loss on, runs rounds in mode
// and tears down with the loss off. It logs the retransmission counters.
func holMeasure(tb testing.TB, n *holNet, stack string, mode holMode, rounds int, started func()) holResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := n.lossy(0); err != nil {
		tb.Fatal(err)
	}
	hs, err := setupHol(ctx, n, stack, holFlows)
	if err != nil {
		tb.Fatalf("%s: setup: %v", stack, err)
	}
	defer hs.close()
	before := [2]map[string]int64{holCounters(n.cli), holCounters(n.srv)}
	fspBefore := hs.fspRetransmissions()
	if err := n.lossy(holLoss); err != nil {
		tb.Fatal(err)
	}
	if started != nil {
		started()
	}
	cpu := attack.CPU()
	stop := make(chan struct{})
	stalls := stallMeter(stop)
	res, err := hs.run(ctx, mode, rounds)
	close(stop)
	if err == nil {
		res.stalled = res.over(n.baseRTT + holStall)
		res.cpu = attack.CPU() - cpu
		res.stalls = <-stalls
	}
	// Tear down over a clean path so Close does not wait out losses.
	if lerr := n.lossy(0); lerr != nil {
		tb.Error(lerr)
	}
	if err != nil {
		tb.Fatal(err)
	}
	switch stack {
	case "tcp":
		for i, ns := range []*netns.NS{n.cli, n.srv} {
			after := holCounters(ns)
			var parts []string
			for _, k := range holTCPCounters {
				if d := after[k] - before[i][k]; d != 0 {
					parts = append(parts, fmt.Sprintf("%s=%d", k, d))
				}
			}
			tb.Logf("tcp %s counters: %v", [...]string{"client", "server"}[i], parts)
		}
	case "fsp":
		tb.Logf("fsp retransmissions: %v", hs.fspRetransmissions().sub(fspBefore))
	}
	return res
}

// holTCPCounters are the kernel's loss-recovery counters worth logging.
var holTCPCounters = []string{"TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes",
	"TcpExtTCPLossProbeRecovery", "TcpExtTCPSackRecovery", "TcpExtTCPFastRetrans",
	"TcpExtTCPLostRetransmit", "TcpExtTCPSpuriousRTOs", "TcpExtTCPDelivered"}

// holCounters reads a namespace's SNMP counters with nstat; nil if that
// fails (the counters are only logged).
func holCounters(ns *netns.NS) map[string]int64 {
	out, err := ns.Exec("nstat", "-asz")
	if err != nil {
		return nil
	}
	m := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m
}

// fspRetransmissions sums the loss-recovery counters of the session's
// FSP connections, both ends.
func (hs *holSession) fspRetransmissions() holFSPCounters {
	var sum holFSPCounters
	for _, c := range append(slices.Clone(hs.flows), hs.servers...) {
		if conn := fsp.ConnOf(c.Transient()); conn != nil {
			st := conn.Stats()
			sum.retx += st.Retransmissions
			sum.probes += st.Probes
			sum.lost += st.PacketsLost
			sum.dups += st.Duplicates
			sum.sent += st.PacketsSent
		}
	}
	return sum
}

// holFSPCounters: retransmissions, probe timeouts, packets declared lost,
// duplicates received (spurious resends, or resends whose acknowledgement
// was lost) and packets sent.
type holFSPCounters struct{ retx, probes, lost, dups, sent uint64 }

func (a holFSPCounters) String() string {
	return fmt.Sprintf("%d (probe timeouts %d, declared lost %d, duplicates received %d; packets sent %d)",
		a.retx, a.probes, a.lost, a.dups, a.sent)
}

func (a holFSPCounters) sub(b holFSPCounters) holFSPCounters {
	return holFSPCounters{a.retx - b.retx, a.probes - b.probes, a.lost - b.lost, a.dups - b.dups, a.sent - b.sent}
}

// BenchmarkHeadOfLine reports the round-trip percentiles of 200-byte
// messages on 8 independent flows over a path with 2% loss each way: FSP
// clones and QUIC streams against one TCP+TLS connection.
func BenchmarkHeadOfLine(b *testing.B) {
	benchHol(b, newHolNet(b), []holMode{holPaced, holRR})
}

func benchHol(b *testing.B, n *holNet, modes []holMode) {
	for _, mode := range modes {
		b.Run(string(mode), func(b *testing.B) {
			for _, st := range benchStacks {
				b.Run(st, func(b *testing.B) {
					res := holMeasure(b, n, st, mode, b.N, b.ResetTimer)
					b.StopTimer()
					b.ReportMetric(0, "ns/op")
					b.ReportMetric(ms(res.pct(0.50)), "p50-ms")
					b.ReportMetric(ms(res.pct(0.99)), "p99-ms")
					b.ReportMetric(ms(res.rtts[len(res.rtts)-1]), "max-ms")
					b.ReportMetric(res.stalled, "%stalled")
					b.ReportMetric(float64(res.cpu.Microseconds())/float64(len(res.rtts)), "cpu-us/msg")
					b.ReportMetric(ms(res.stalls), "stall-ms")
					b.Logf("%s %s: %v", mode, st, res)
					holDump(b, res)
				})
			}
		})
	}
}

// TestHeadOfLineLossIntact sends a few hundred messages on 8 flows over
// each stack through the 2% lossy path and checks that every one comes
// back intact, exactly once and in order within its flow.
func TestHeadOfLineLossIntact(t *testing.T) {
	if testing.Short() {
		t.Skip("network namespace test skipped in short mode")
	}
	n := newHolNet(t)
	for _, st := range benchStacks {
		t.Run(st, func(t *testing.T) {
			res := holMeasure(t, n, st, holPaced, 40, nil)
			if len(res.rtts) != 40*holFlows {
				t.Fatalf("%d echoes, want %d", len(res.rtts), 40*holFlows)
			}
			t.Logf("%v", res)
		})
	}
}

// holDump writes res's round trips, one per line in milliseconds, to
// $HOL_DUMP/<benchmark name>.txt when HOL_DUMP names a directory;
// internal/benchchart draws them as latency CDFs. Unset, it does nothing.
func holDump(b *testing.B, res holResult) {
	dir := os.Getenv("HOL_DUMP")
	if dir == "" {
		return
	}
	var sb strings.Builder
	for _, d := range res.rtts {
		sb.WriteString(strconv.FormatFloat(ms(d), 'f', -1, 64))
		sb.WriteByte('\n')
	}
	name := strings.ReplaceAll(strings.TrimPrefix(b.Name(), "Benchmark"), "/", "_")
	if err := os.WriteFile(filepath.Join(dir, name+".txt"), []byte(sb.String()), 0o644); err != nil {
		b.Error(err)
	}
}
