//go:build unix

package fsp

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/sockio"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
	"github.com/quic-go/quic-go"
)

// BenchmarkFourFlows runs four bulk flows, each from its own client
// socket, to one server socket on loopback and reports their aggregate
// throughput (MB/s counts the bytes of all four): FSP to one Listener,
// quic-go (one stream per connection) to one quic.Listener, and TLS over
// TCP to one listener. BenchmarkOneFlow is the same with one flow. Both
// report the process's CPU time per message (cpu-ns/op, both ends,
// steadier than MB/s on a shared machine) and CPU time over wall time
// (cpu/wall: how many cores were busy).
//
//	go test -run '^$' -bench 'OneFlow|FourFlows' -benchtime 2s ./psi/fsp
//
// BenchmarkOneFlow/aes-gcm-seal is one core's AES-GCM seal rate, in the
// same run, for the ratio of FSP's throughput to it.
func BenchmarkFourFlows(b *testing.B) { benchFlows(b, 4) }

// BenchmarkOneFlow is BenchmarkFourFlows with one flow. Its aes-gcm-seal
// part measures, in the same run, what one core seals with FSP's packet
// protection: each op seals a 64 KiB message as FSP sends it, in
// packets of MaxPayload bytes (a full datagram) with their headers, so
// its MB/s and cpu-ns/op compare with the flows'. It also reports
// cpu-MB/s, the plaintext sealed per second of CPU time: the one-core
// rate even when a loaded host gives the benchmark less than a core
// (MB/s then falls with the share of the core it got).
func BenchmarkOneFlow(b *testing.B) {
	benchFlows(b, 1)
	b.Run("aes-gcm-seal", benchSeal)
}

// benchSeal seals bulkMessage bytes per op in one goroutine, as trySend
// seals them: the header as additional data, appended to a datagram
// buffer, under consecutive packet numbers of one Direction.
func benchSeal(b *testing.B) {
	tx := fcrypto.NewDirection(randBytes(fcrypto.SecretLen))
	msg := randBytes(bulkMessage)
	buf := make([]byte, 0, MaxDatagramSize)
	p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Dst: 1 << 20, Src: 2 << 20}}
	var pn uint64
	b.SetBytes(bulkMessage)
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		for m := msg; len(m) > 0; pn++ {
			n := min(len(m), MaxPayload)
			p.Seq, p.PN = uint32(pn), uint32(pn)
			hdr := wire.AppendHeader(buf[:0], &p)
			if _, err := tx.Seal(hdr, pn, hdr, m[:n]); err != nil {
				b.Fatal(err)
			}
			m = m[n:]
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(b.N)*bulkMessage/1e6/cpu.Seconds(), "cpu-MB/s")
}

func benchFlows(b *testing.B, bulkFlows int) {
	// The default Config: on loopback the clients' data leaves in jumbo
	// datagrams of 8,972 bytes.
	b.Run("fsp", func(b *testing.B) { benchFSPFlows(b, bulkFlows, 0) })
	// The listener takes no datagram above MaxDatagramSize, as on an
	// Ethernet path: the clients' data leaves in datagrams of 1,452.
	b.Run("fsp-1452", func(b *testing.B) { benchFSPFlows(b, bulkFlows, MaxDatagramSize) })
	benchOtherFlows(b, bulkFlows)
}

// benchFSPFlows is benchFlows' FSP part, with the listener's
// Config.MaxPathMTU set to mtu.
func benchFSPFlows(b *testing.B, bulkFlows, mtu int) {
	{
		scfg, ccfg := pair(b)
		scfg.MaxPathMTU = mtu
		l := listen(b, scfg)
		ctx := testContext(b)
		var cs, ss []*Conn
		for range bulkFlows {
			c, s := connect(b, l, ccfg)
			cs, ss = append(cs, c), append(ss, s)
		}
		drops := sockio.Drops(l.t.udp)
		stop := sampleQueue(b, cs[0])
		runFlows(b, bulkFlows, func(i, n int) error {
			msg := randBytes(bulkMessage)
			for range n {
				if err := cs[i].SendMessage(ctx, msg); err != nil {
					return err
				}
			}
			return nil
		}, func(i, n int) error {
			buf := make([]byte, bulkMessage)
			for got := 0; got < n; {
				_, end, err := ss[i].ReadMessage(ctx, buf)
				if err != nil {
					return err
				}
				if end {
					got++
				}
			}
			return nil
		})
		stop()
		var lost, dropped, dups, probes, rejected uint64
		for i := range cs {
			lost += cs[i].Stats().PacketsLost
			probes += cs[i].Stats().Probes
			dropped += ss[i].Stats().QueueDropped
			dups += ss[i].Stats().Duplicates
			rejected += ss[i].Stats().PacketsDropped
		}
		b.ReportMetric(float64(dups), "dups")
		b.ReportMetric(float64(probes), "probes")
		b.ReportMetric(float64(rejected), "rejected")
		b.ReportMetric(float64(lost), "lost")
		b.ReportMetric(float64(dropped), "queue-drops")
		// Datagrams the listener's socket buffer overflowed with.
		b.ReportMetric(float64(sockio.Drops(l.t.udp)-drops), "rcvbuf-drops")
	}
}

// sampleQueue samples c's smoothed RTT and congestion window every 10 ms
// until the returned function is called, which reports the RTT's p50 and
// p99 (srtt-p50-us, srtt-p99-us: the queue a flow builds on loopback
// shows as a rise of the round trip) and the largest and final window
// (cwnd-max-KB, cwnd-KB) of the first flow.
func sampleQueue(b *testing.B, c *Conn) (stop func()) {
	done := make(chan struct{})
	var srtts []time.Duration
	var cwndMax int
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				st := c.Stats()
				if st.SmoothedRTT > 0 {
					srtts = append(srtts, st.SmoothedRTT)
				}
				cwndMax = max(cwndMax, st.CongestionWindow)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		slices.Sort(srtts)
		if n := len(srtts); n > 0 {
			b.ReportMetric(float64(srtts[n/2].Microseconds()), "srtt-p50-us")
			b.ReportMetric(float64(srtts[n*99/100].Microseconds()), "srtt-p99-us")
		}
		b.ReportMetric(float64(cwndMax)/1e3, "cwnd-max-KB")
		b.ReportMetric(float64(c.Stats().CongestionWindow)/1e3, "cwnd-KB")
	}
}

// benchOtherFlows is benchFlows' quic-go and TLS over TCP parts.
func benchOtherFlows(b *testing.B, bulkFlows int) {
	b.Run("quic", func(b *testing.B) {
		stls, ctls := quicConfigs(b)
		ln, err := quic.ListenAddr("127.0.0.1:0", stls, quicConf)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		ctx := testContext(b)
		var sends []*quic.Stream
		var recvs []*quic.Stream
		for range bulkFlows {
			c, err := quic.DialAddr(ctx, ln.Addr().String(), ctls, quicConf)
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseWithError(0, "")
			st, err := c.OpenStreamSync(ctx)
			if err != nil {
				b.Fatal(err)
			}
			st.Write([]byte{0}) // the peer learns of a stream when it has data
			sc, err := ln.Accept(ctx)
			if err != nil {
				b.Fatal(err)
			}
			rs, err := sc.AcceptStream(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(rs, make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
			sends, recvs = append(sends, st), append(recvs, rs)
		}
		runFlows(b, bulkFlows, func(i, n int) error {
			msg := randBytes(bulkMessage)
			for range n {
				if _, err := sends[i].Write(msg); err != nil {
					return err
				}
			}
			return nil
		}, func(i, n int) error {
			_, err := io.CopyN(io.Discard, recvs[i], int64(n)*bulkMessage)
			return err
		})
	})
	b.Run("tls-tcp", func(b *testing.B) {
		stls, ctls := quicConfigs(b)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", stls)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		var cs, ss []net.Conn
		for range bulkFlows {
			acc := make(chan net.Conn, 1)
			go func() {
				s, err := ln.Accept()
				if err == nil && s.(*tls.Conn).Handshake() != nil {
					s.Close()
					s = nil
				}
				acc <- s
			}()
			c, err := tls.Dial("tcp", ln.Addr().String(), ctls)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			s := <-acc
			if s == nil {
				b.Fatal("accept failed")
			}
			defer s.Close()
			cs, ss = append(cs, c), append(ss, s)
		}
		runFlows(b, bulkFlows, func(i, n int) error {
			msg := randBytes(bulkMessage)
			for range n {
				if _, err := cs[i].Write(msg); err != nil {
					return err
				}
			}
			return nil
		}, func(i, n int) error {
			_, err := io.CopyN(io.Discard, ss[i], int64(n)*bulkMessage)
			return err
		})
	})
}

// runFlows splits b.N messages over bulkFlows senders and receivers
// running at once and waits for all of them.
func runFlows(b *testing.B, bulkFlows int, send, recv func(i, n int) error) {
	b.SetBytes(bulkMessage)
	cpu0, wall0 := cpuTime(), time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, 2*bulkFlows)
	for i := range bulkFlows {
		n := b.N / bulkFlows
		if i < b.N%bulkFlows {
			n++
		}
		wg.Add(2)
		go func() { defer wg.Done(); errs <- send(i, n) }()
		go func() { defer wg.Done(); errs <- recv(i, n) }()
	}
	wg.Wait()
	b.StopTimer()
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu/wall")
	close(errs)
	for err := range errs {
		if err != nil && err != context.Canceled {
			b.Fatal(err)
		}
	}
}
