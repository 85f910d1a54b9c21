package httpcarrier_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The benchmark's two namespaces, joined by a veth pair whose ends drop
// 2% of arriving packets (nftables numgen), each way.
var (
	benchSrv = netip.MustParsePrefix("10.204.0.1/24")
	benchCli = netip.MustParsePrefix("10.204.0.2/24")
)

const (
	benchPerStream = 250 // requests per stream
	benchBody      = 1024
)

func stackIn(name string, ns *netns.NS) []psi.Stack {
	for _, s := range carrier.DefaultStacks() {
		if s.Name() == name {
			return []psi.Stack{netns.Stack(s, ns)}
		}
	}
	panic("no " + name + " stack")
}

// BenchmarkHTTPLossy measures request latency with 2% loss each way:
// eight concurrent streams of small GETs (1 KiB bodies), over HTTP on FSP
// clones, HTTP on the QUIC stack's forks (carrier-quic: httpcarrier and
// the Carrier over quic-go streams, to tell their cost from FSP's),
// HTTP/1.1 on one TCP+TLS connection, HTTP/2 over TLS and HTTP/3
// (quic-go), across a veth pair (microsecond round trips), the same pair
// without loss ("lossless": a request's fixed cost) and across a 20 ms
// delay line. It reports p50 and p99 per protocol, the process's CPU time
// per request (both ends) and, for the UDP stacks, the packets the
// client's stack sent and received per request; run it once:
//
//	go test -run XXX -bench HTTPLossy -benchtime 1x ./httpcarrier
func BenchmarkHTTPLossy(b *testing.B) {
	if err := netns.Available(); err != nil {
		b.Skipf("needs network namespaces (root, iproute2, nftables): %v", err)
	}
	body := make([]byte, benchBody)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	veth := func(b *testing.B, srv, cli *netns.NS) netip.Addr {
		netns.Link(b, srv, cli, benchSrv, benchCli)
		return benchSrv.Addr()
	}
	for _, path := range []struct {
		name      string
		perStream int
		loss      int // percent dropped on arrival, each way
		link      func(b *testing.B, srv, cli *netns.NS) netip.Addr
	}{
		{"veth", benchPerStream, 2, veth},
		{"lossless", benchPerStream, 0, veth}, // the same veth pair without drops: the fixed cost of a request
		{"rtt20ms", benchPerStream / 2, 2, func(b *testing.B, srv, cli *netns.NS) netip.Addr {
			a, c := netip.MustParseAddr("10.205.0.1"), netip.MustParseAddr("10.205.0.2")
			if err := netns.DelayLink(b, srv, cli, "hbtun", a, c, 10*time.Millisecond); err != nil {
				b.Skipf("no delay line: %v", err)
			}
			return a
		}},
	} {
		b.Run(path.name, func(b *testing.B) {
			srv, cli := netns.New(b, "hbsrv"), netns.New(b, "hbcli")
			addr := path.link(b, srv, cli)
			for _, proto := range []string{"fsp", "carrier-quic", "http1-tls", "http2-tls", "http3"} {
				b.Run(proto, func(b *testing.B) {
					client, url := benchClient(b, proto, srv, cli, addr, h)
					for range 16 { // warm up without loss
						if err := get(client, url); err != nil {
							b.Fatal(err)
						}
					}
					if path.loss > 0 {
						for _, ns := range []*netns.NS{srv, cli} {
							if err := ns.Drop(path.loss, ""); err != nil {
								b.Fatal(err)
							}
						}
						defer func() {
							srv.ClearDrops()
							cli.ClearDrops()
						}()
					}
					b.ResetTimer()
					var lats []time.Duration
					pkts0 := benchPackets(client)
					cpu := attack.CPU()
					for range b.N {
						l, err := runStreams(client, url, path.perStream)
						if err != nil {
							b.Fatal(err)
						}
						lats = append(lats, l...)
					}
					cpu = attack.CPU() - cpu
					b.StopTimer()
					pkts := benchPackets(client).sub(pkts0)
					slices.Sort(lats)
					n := float64(len(lats))
					p50, p99 := lats[len(lats)/2], lats[len(lats)*99/100]
					b.ReportMetric(float64(p50)/1e6, "p50-ms")
					b.ReportMetric(float64(p99)/1e6, "p99-ms")
					b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-us/req")
					if pkts.ok {
						b.ReportMetric(float64(pkts.sent)/n, "pkts-out/req")
						b.ReportMetric(float64(pkts.received)/n, "pkts-in/req")
						b.ReportMetric(float64(pkts.retx)/n, "resent-out/req")
					}
					b.Logf("%s %s: %d requests, p50 %v, p99 %v, max %v", path.name, proto, len(lats), p50, p99, lats[len(lats)-1])
				})
			}
		})
	}
}

// packetCount is what a client's stack counted: packets sent and
// received, retransmissions and duplicates included.
type packetCount struct {
	sent, received, retx uint64
	ok                   bool
	byFork               map[*carrier.Carrier]psi.TransientStats
}

// sub returns what c counted since before.
func (c packetCount) sub(before packetCount) packetCount {
	if !c.ok || !before.ok {
		return packetCount{}
	}
	if c.byFork == nil {
		return packetCount{sent: c.sent - before.sent, received: c.received - before.received, retx: c.retx - before.retx, ok: true}
	}
	d := packetCount{ok: true}
	for f, st := range c.byFork {
		st0 := before.byFork[f] // zero for a fork new since before
		d.sent += st.PacketsSent - st0.PacketsSent
		d.received += st.PacketsReceived - st0.PacketsReceived
		d.retx += st.Retransmissions - st0.Retransmissions
	}
	return d
}

// benchPackets counts the packets of client's connections: the idle
// forks of an httpcarrier.Transport (FSP: each a connection), or the QUIC
// connection of an HTTP/3 client.
func benchPackets(client *http.Client) packetCount {
	switch tr := client.Transport.(type) {
	case *httpcarrier.Transport:
		c := packetCount{ok: true, byFork: map[*carrier.Carrier]psi.TransientStats{}}
		for _, f := range httpcarrier.IdleForks(tr) {
			key, st := f, f.Stats().TransientStats
			if f.Stack() != "fsp" {
				key = nil // QUIC streams: every fork reports the one connection
			}
			c.byFork[key] = st
		}
		for _, st := range c.byFork {
			c.sent += st.PacketsSent
			c.received += st.PacketsReceived
			c.retx += st.Retransmissions
		}
		return c
	case *h3Transport:
		if qc := tr.conn.Load(); qc != nil {
			st := qc.ConnectionStats()
			return packetCount{sent: st.PacketsSent, received: st.PacketsReceived, retx: st.PacketsLost, ok: true}
		}
	}
	return packetCount{}
}

// h3Transport is an HTTP/3 client transport that keeps its connection
// (one, to one server), for benchPackets.
type h3Transport struct {
	*http3.Transport
	conn atomic.Pointer[quic.Conn]
}

// benchStreams is the number of concurrent request streams: 8, or
// $HTTPLOSSY_STREAMS (1 shows the latency of a request on an idle path).
var benchStreams = func() int {
	if n, err := strconv.Atoi(os.Getenv("HTTPLOSSY_STREAMS")); err == nil && n > 0 {
		return n
	}
	return 8
}()

// runStreams runs the streams and returns every request's latency.
func runStreams(client *http.Client, url string, perStream int) ([]time.Duration, error) {
	var mu sync.Mutex
	var lats []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, benchStreams)
	for range benchStreams {
		wg.Go(func() {
			for range perStream {
				start := time.Now()
				if err := get(client, url); err != nil {
					errs <- err
					return
				}
				d := time.Since(start)
				mu.Lock()
				lats = append(lats, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	return lats, <-errs
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n != benchBody {
		err = fmt.Errorf("%d bytes", n)
	}
	return err
}

// benchClient serves h in srv over proto and returns a client in cli.
func benchClient(b *testing.B, proto string, srv, cli *netns.NS, addr netip.Addr, h http.Handler) (*http.Client, string) {
	ctx := context.Background()
	switch proto {
	case "fsp", "carrier-quic":
		stack := strings.TrimPrefix(proto, "carrier-")
		scfg := &carrier.Config{Security: psi.Security{Certificates: []tls.Certificate{certs.Leaf}}, Stacks: stackIn(stack, srv)}
		ccfg := &carrier.Config{Security: psi.Security{RootCAs: certs.Pool}, Stacks: stackIn(stack, cli)}
		scfg.Policy.Stack(stack, policy.Require)
		ccfg.Policy.Stack(stack, policy.Require)
		l, err := carrier.Listen(ctx, post.Local{Addr: netip.AddrPortFrom(addr, 0)}, scfg)
		if err != nil {
			b.Fatal(err)
		}
		s := &httpcarrier.Server{Handler: h}
		go s.Serve(l)
		b.Cleanup(func() { s.Close() })
		remote := l.Remote(addr.String())
		remote.ServerName = "localhost"
		tr := &httpcarrier.Transport{Config: ccfg, Remote: func(string) post.Remote { return remote }}
		b.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: time.Minute}, "http://" + remote.Name + "/"
	case "http3":
		pc, err := srv.ListenPacket("udp", net.JoinHostPort(addr.String(), "0"))
		if err != nil {
			b.Fatal(err)
		}
		hs := &http3.Server{Handler: h, TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{certs.Leaf}})}
		go hs.Serve(pc)
		b.Cleanup(func() { hs.Close(); pc.Close() })
		cpc, err := cli.ListenPacket("udp", ":0")
		if err != nil {
			b.Fatal(err)
		}
		tr := &h3Transport{}
		tr.Transport = &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: certs.Pool, ServerName: "localhost"},
			Dial: func(ctx context.Context, a string, tcfg *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
				ua, err := net.ResolveUDPAddr("udp", a)
				if err != nil {
					return nil, err
				}
				qc, err := quic.DialEarly(ctx, cpc, ua, tcfg, qcfg)
				if err == nil {
					tr.conn.Store(qc)
				}
				return qc, err
			},
		}
		b.Cleanup(func() { tr.Close(); cpc.Close() })
		return &http.Client{Transport: tr, Timeout: time.Minute}, "https://" + pc.LocalAddr().String() + "/"
	default:
		ln, err := srv.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
		if err != nil {
			b.Fatal(err)
		}
		hs := &http.Server{Handler: h}
		tcfg := &tls.Config{Certificates: []tls.Certificate{certs.Leaf}}
		tr := &http.Transport{
			DialContext:     cli.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: certs.Pool, ServerName: "localhost"},
			MaxConnsPerHost: 1, // one connection
		}
		if proto == "http2-tls" {
			tcfg.NextProtos = []string{"h2", "http/1.1"}
			tr.ForceAttemptHTTP2 = true
		} else {
			hs.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
			tcfg.NextProtos = []string{"http/1.1"}
		}
		go hs.Serve(tls.NewListener(ln, tcfg))
		b.Cleanup(func() { hs.Close() })
		b.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: time.Minute}, "https://" + ln.Addr().String() + "/"
	}
}
