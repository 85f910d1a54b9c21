//go:build linux

package fsp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
)

// A 100 Mbit/s bottleneck with a 20 ms round trip: the client's
// namespace reaches a router namespace over a veth pair, and the router
// reaches the server's namespace over a TUN delay line (netns.DelayLink,
// 10 ms each way) whose devices shape what they send with tc tbf (100
// Mbit/s, a queue of one bandwidth-delay product, 250 KB). The data
// queue is in the router, as on a real path: a queue in the sender's own
// stack would hold kernel TCP to about a millisecond of data in it (TCP
// small queues) but not UDP, and the flow that may fill that queue wins.
// Needs root; run once each:
//
//	go test -run '^$' -bench 'Fairness|GoodputLoss' -benchtime 1x ./psi/fsp

const (
	bnRate    = "100mbit"
	bnOneWay  = 10 * time.Millisecond
	bnChunk   = 64 << 10
	bnWarm    = 2 * time.Second // slow start, not counted
	bnFair    = 20 * time.Second
	bnGoodput = 15 * time.Second
)

var (
	bnSrv    = netip.MustParseAddr("10.206.0.1")
	bnRtrTun = netip.MustParseAddr("10.206.0.2")
	bnRtr    = netip.MustParsePrefix("10.206.1.1/24")
	bnCliP   = netip.MustParsePrefix("10.206.1.2/24")
	bnCli    = bnCliP.Addr()
)

type bottleneck struct{ cli, rtr, srv *netns.NS }

func newBottleneck(b *testing.B) *bottleneck {
	b.Helper()
	if err := netns.Available(); err != nil {
		b.Skipf("needs network namespaces (root, iproute2, nftables): %v", err)
	}
	n := &bottleneck{cli: netns.New(b, "bncli"), rtr: netns.New(b, "bnrtr"), srv: netns.New(b, "bnsrv")}
	netns.Link(b, n.cli, n.rtr, bnCliP, bnRtr)
	if err := netns.DelayLink(b, n.srv, n.rtr, "bntun", bnSrv, bnRtrTun, bnOneWay); err != nil {
		b.Skipf("no delay line: %v", err)
	}
	for _, err := range []error{
		n.rtr.EnableForwarding(),
		n.cli.DefaultRoute(bnRtr.Addr()),
		n.srv.AddRoute(bnCliP.Masked(), bnRtrTun),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, ns := range []*netns.NS{n.rtr, n.srv} {
		if err := ns.Run("tc", "qdisc", "add", "dev", "bntun", "root", "tbf", "rate", bnRate, "burst", "32kb", "limit", "250kb"); err != nil {
			b.Skipf("no tc tbf: %v", err)
		}
	}
	return n
}

// loss drops percent of the packets arriving in each namespace.
func (n *bottleneck) loss(b *testing.B, percent int) {
	for _, ns := range []*netns.NS{n.cli, n.srv} {
		if err := ns.ClearDrops(); err != nil {
			b.Fatal(err)
		}
		if percent > 0 {
			if err := ns.Drop(percent, ""); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// drops describes where packets were dropped: at the bottleneck's queue
// (the router's tbf), and at the server's UDP sockets.
func (n *bottleneck) drops() string {
	var tbf, udp string
	if out, err := n.rtr.Exec("tc", "-s", "qdisc", "show", "dev", "bntun"); err == nil {
		if i := strings.Index(out, "dropped "); i >= 0 {
			tbf, _, _ = strings.Cut(out[i+len("dropped "):], ",")
		}
	}
	for _, name := range []string{"RcvbufErrors", "InErrors"} {
		if v, err := n.srv.SNMP("Udp", name); err == nil {
			udp += fmt.Sprintf("%s %d ", name, v)
		}
	}
	// Devices that dropped (a TUN device of the delay line, say, when the
	// process reading it falls behind), from /proc/net/dev.
	var dev string
	for _, ns := range []*netns.NS{n.cli, n.rtr, n.srv} {
		out, err := ns.Exec("cat", "/proc/net/dev")
		if err != nil {
			continue
		}
		for line := range strings.Lines(out) {
			name, rest, ok := strings.Cut(line, ":")
			f := strings.Fields(rest)
			if !ok || len(f) < 12 || f[3] == "0" && f[11] == "0" {
				continue
			}
			dev += fmt.Sprintf("%s/%s rx %s tx %s ", ns.Name(), strings.TrimSpace(name), f[3], f[11])
		}
	}
	return fmt.Sprintf("drops (whole run): bottleneck queue %s, devices %s, server UDP %s", tbf, dev, udp)
}

// flow is one bulk sender and the bytes its receiver read.
type flow struct {
	got  atomic.Int64
	send func(ctx context.Context) error
	note string // FSP: the senders' loss counters, when send returns
}

// measure runs the flows together for d and returns each one's goodput in
// Mbit/s after the warm-up.
func measure(b *testing.B, d time.Duration, flows ...*flow) []float64 {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, len(flows))
	for _, f := range flows {
		wg.Go(func() {
			if err := f.send(ctx); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	time.Sleep(bnWarm)
	start := make([]int64, len(flows))
	for i, f := range flows {
		start[i] = f.got.Load()
	}
	t0 := time.Now()
	time.Sleep(d - bnWarm)
	el := time.Since(t0).Seconds()
	out := make([]float64, len(flows))
	for i, f := range flows {
		out[i] = float64(f.got.Load()-start[i]) * 8 / el / 1e6
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return out
}

// tcpFlow is a kernel TCP flow with CUBIC from the client namespace.
func (n *bottleneck) tcpFlow(b *testing.B) *flow {
	var l net.Listener
	if err := n.srv.Do(func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(bnSrv, 0).String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	f := &flow{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go count(c, &f.got)
		}
	}()
	f.send = func(ctx context.Context) error {
		var c net.Conn
		err := n.cli.Do(func() (err error) {
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, "cubic")
				})
				return errors.Join(err, serr)
			}}
			c, err = d.DialContext(ctx, "tcp", l.Addr().String())
			return err
		})
		if err != nil {
			return err
		}
		closed := make(chan struct{})
		defer func() { <-closed }() // the note is written
		context.AfterFunc(ctx, func() {
			defer close(closed)
			if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
						f.note = fmt.Sprintf("tcp: %d segments sent, %d retransmitted", info.Data_segs_out, info.Total_retrans)
					}
				})
			}
			c.Close()
		})
		msg := randBytes(bnChunk)
		for ctx.Err() == nil {
			if _, err := c.Write(msg); err != nil {
				return err
			}
		}
		return nil
	}
	return f
}

func count(r io.ReadCloser, got *atomic.Int64) {
	defer r.Close()
	buf := make([]byte, bnChunk)
	for {
		k, err := r.Read(buf)
		got.Add(int64(k))
		if err != nil {
			return
		}
	}
}

// fspFlow is one FSP connection, its data sent on clones clones (the
// root itself when clones is 0), all counted together.
func (n *bottleneck) fspFlow(b *testing.B, clones int) *flow {
	scfg, ccfg := pair(b)
	spc, err := n.srv.ListenUDP(netip.AddrPortFrom(bnSrv, 0))
	if err != nil {
		b.Fatal(err)
	}
	cpc, err := n.cli.ListenUDP(netip.AddrPortFrom(bnCli, 0))
	if err != nil {
		b.Fatal(err)
	}
	// The buffers fsp.Listen and fsp.Dial give the sockets they open
	// (quic-go sizes the ones it is given itself): with the kernel's
	// default the server's socket overflowed whenever the loaded host
	// held its reader back, and FSP lost more packets there than at the
	// bottleneck (BenchmarkFairness's drops line).
	for _, pc := range []*net.UDPConn{spc, cpc} {
		sockio.SetReadBuffer(pc, socketBuffer)
		pc.SetWriteBuffer(socketBuffer)
	}
	st, ct := &Transport{Conn: spc}, &Transport{Conn: cpc}
	b.Cleanup(func() { ct.Close(); st.Close(); cpc.Close(); spc.Close() })
	l, err := st.Listen(scfg)
	if err != nil {
		b.Fatal(err)
	}
	f := &flow{}
	var rmu sync.Mutex
	var receivers []*Conn
	read := func(ctx context.Context, c *Conn) {
		rmu.Lock()
		receivers = append(receivers, c)
		rmu.Unlock()
		buf := make([]byte, bnChunk)
		for {
			k, _, err := c.ReadMessage(ctx, buf)
			f.got.Add(int64(k))
			if err != nil {
				return
			}
		}
	}
	go func() {
		ctx := context.Background()
		s, err := l.Accept(ctx)
		if err != nil {
			return
		}
		go read(ctx, s)
		for {
			cl, err := s.AcceptFork(ctx)
			if err != nil {
				return
			}
			go read(ctx, cl)
		}
	}()
	f.send = func(ctx context.Context) error {
		c, err := ct.Dial(ctx, net.UDPAddrFromAddrPort(spc.LocalAddr().(*net.UDPAddr).AddrPort()), ccfg)
		if err != nil {
			return err
		}
		defer c.Close()
		senders := []*Conn{c}
		if clones > 0 {
			senders = senders[:0]
			for range clones {
				cl, err := c.Fork(ctx)
				if err != nil {
					return err
				}
				defer cl.Close()
				senders = append(senders, cl)
			}
		}
		msg := randBytes(bnChunk)
		var wg sync.WaitGroup
		errs := make(chan error, len(senders))
		for _, s := range senders {
			wg.Go(func() {
				for ctx.Err() == nil {
					if err := s.SendMessage(ctx, msg); err != nil && ctx.Err() == nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		var st Stats
		for _, s := range senders {
			x := s.Stats()
			st.PacketsSent += x.PacketsSent
			st.PacketsLost += x.PacketsLost
			st.Retransmissions += x.Retransmissions
			st.Probes += x.Probes
		}
		var rs Stats
		rmu.Lock()
		for _, r := range receivers {
			x := r.Stats()
			rs.Duplicates += x.Duplicates
			rs.QueueDropped += x.QueueDropped
		}
		rmu.Unlock()
		f.note = fmt.Sprintf("fsp: %d packets sent, %d lost, %d retransmitted, %d probes; receiver: %d duplicates, %d dropped by its queue bound", st.PacketsSent, st.PacketsLost, st.Retransmissions, st.Probes, rs.Duplicates, rs.QueueDropped)
		close(errs)
		return <-errs
	}
	return f
}

// quicFlow is one quic-go stream.
func (n *bottleneck) quicFlow(b *testing.B) *flow {
	stls, ctls := quicConfigs(b)
	spc, err := n.srv.ListenUDP(netip.AddrPortFrom(bnSrv, 0))
	if err != nil {
		b.Fatal(err)
	}
	cpc, err := n.cli.ListenUDP(netip.AddrPortFrom(bnCli, 0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cpc.Close(); spc.Close() })
	ln, err := quic.Listen(spc, stls, quicConf)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	f := &flow{}
	go func() {
		ctx := context.Background()
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		count(io.NopCloser(st), &f.got)
	}()
	f.send = func(ctx context.Context) error {
		c, err := quic.Dial(ctx, cpc, spc.LocalAddr(), ctls, quicConf)
		if err != nil {
			return err
		}
		defer c.CloseWithError(0, "")
		st, err := c.OpenStreamSync(ctx)
		if err != nil {
			return err
		}
		context.AfterFunc(ctx, func() { st.CancelWrite(0) })
		msg := randBytes(bnChunk)
		for ctx.Err() == nil {
			if _, err := st.Write(msg); err != nil {
				return err
			}
		}
		return nil
	}
	return f
}

// BenchmarkFairness shares the bottleneck for 20 s between one kernel TCP
// CUBIC flow and one FSP flow, or one FSP session sending on eight clones
// at once, and reports FSP's share of the goodput after the first 2 s.
// Clones share one congestion controller, so eight of them should take
// one flow's share: 40-60%.
//
// The tcp case, a second kernel TCP CUBIC flow in FSP's place, shows how
// far the share of two equal flows swings from run to run on this path.
func BenchmarkFairness(b *testing.B) {
	for _, m := range []struct {
		name   string
		clones int
	}{{"tcp", -1}, {"fsp", 0}, {"fsp-8clones", 8}} {
		b.Run(m.name, func(b *testing.B) {
			n := newBottleneck(b)
			for range b.N {
				var ff *flow
				if m.clones < 0 {
					ff = n.tcpFlow(b)
				} else {
					ff = n.fspFlow(b, m.clones)
				}
				tf := n.tcpFlow(b)
				r := measure(b, bnFair, ff, tf)
				b.Log(ff.note)
				b.Log(tf.note)
				b.Log(n.drops())
				b.ReportMetric(r[0], "fsp-Mbit/s")
				b.ReportMetric(r[1], "tcp-Mbit/s")
				b.ReportMetric(100*r[0]/(r[0]+r[1]), "fsp-%")
			}
		})
	}
}

// BenchmarkGoodputLoss measures one flow's goodput through the bottleneck
// with 1% and 3% of the packets dropped at random each way (nftables
// numgen), FSP against quic-go, 15 s each; it logs FSP/QUIC.
func BenchmarkGoodputLoss(b *testing.B) {
	for _, loss := range []int{1, 3} {
		b.Run(fmt.Sprintf("loss%d", loss), func(b *testing.B) {
			n := newBottleneck(b)
			n.loss(b, loss)
			got := map[string]float64{}
			for _, stack := range []string{"fsp", "quic"} {
				b.Run(stack, func(b *testing.B) {
					for range b.N {
						f := n.fspFlow
						if stack == "quic" {
							f = func(b *testing.B, _ int) *flow { return n.quicFlow(b) }
						}
						fl := f(b, 0)
						r := measure(b, bnGoodput, fl)
						if fl.note != "" {
							b.Log(fl.note)
						}
						got[stack] = r[0]
						b.ReportMetric(r[0], "Mbit/s")
					}
				})
			}
			if got["quic"] > 0 {
				b.Logf("loss %d%%: FSP %.1f Mbit/s, quic-go %.1f Mbit/s, FSP/QUIC %.2f", loss, got["fsp"], got["quic"], got["fsp"]/got["quic"])
			}
		})
	}
}
