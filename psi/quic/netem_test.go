package quic

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// netemStack returns a Stack whose sockets impair what they send with
// out, and the sockets it made.
func netemStack(out netem.Config) (*Stack, func() []*netem.PacketConn) {
	var mu sync.Mutex
	var conns []*netem.PacketConn
	st := &Stack{PacketConn: func(local netip.AddrPort) (net.PacketConn, error) {
		if !local.IsValid() {
			local = loopback
		}
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
		if err != nil {
			return nil, err
		}
		nc := netem.New(pc, out)
		mu.Lock()
		conns = append(conns, nc)
		mu.Unlock()
		return nc, nil
	}}
	return st, func() []*netem.PacketConn {
		mu.Lock()
		defer mu.Unlock()
		return append([]*netem.PacketConn(nil), conns...)
	}
}

// TestNetemPath runs over an emulated 20 ms round trip with 1% loss.
func TestNetemPath(t *testing.T) {
	st, _ := netemStack(netem.Config{Delay: 10 * time.Millisecond, Loss: 0.01})
	cli, srv, _ := pair(t, st, serverConfig(), clientConfig())
	ctx := testContext(t)
	size := 1 << 20
	if testing.Short() {
		size = 128 << 10
	}
	msg := pattern(size, 9)
	errc := make(chan error, 1)
	go func() { errc <- cli.WriteMessage(ctx, msg, true, nil) }()
	got, err := readAll(ctx, srv, 32<<10)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// netem never releases a packet early, so the RTT is at least 20 ms.
	if rtt := cli.Path().RTT; rtt < 20*time.Millisecond {
		t.Errorf("client RTT %v below the emulated 20 ms", rtt)
	}
}

// TestIdleTimeout blackholes the path: the transients end with
// post.ErrTimeout once the idle timeout passes.
func TestIdleTimeout(t *testing.T) {
	st, conns := netemStack(netem.Config{})
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.IdleTimeout = 300 * time.Millisecond
	ccfg.IdleTimeout = 300 * time.Millisecond
	cli, srv, _ := pair(t, st, scfg, ccfg)
	ctx := testContext(t)
	send(t, ctx, cli, []byte("before"), nil)
	if _, err := readAll(ctx, srv, 16); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns() {
		c.SetBlackhole(true)
	}
	if _, _, err := cli.ReadMessage(ctx, make([]byte, 8)); !errors.Is(err, post.ErrTimeout) {
		t.Errorf("client read: %v", err)
	}
	if _, _, err := srv.ReadMessage(ctx, make([]byte, 8)); !errors.Is(err, post.ErrTimeout) {
		t.Errorf("server read: %v", err)
	}
}

// TestKeepAlive keeps an idle connection up across several idle timeouts.
// The idle timeout is ten keep-alive intervals, so only a scheduling stall
// of most of a second on a loaded machine could end the connection.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	var st Stack
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.IdleTimeout = time.Second
	ccfg.IdleTimeout = time.Second
	ccfg.KeepAlive = 100 * time.Millisecond
	cli, srv, _ := pair(t, &st, scfg, ccfg)
	ctx := testContext(t)
	time.Sleep(2500 * time.Millisecond) // 2.5 idle timeouts; not a timing assertion
	send(t, ctx, cli, []byte("still up"), nil)
	if m, err := readAll(ctx, srv, 16); err != nil || string(m) != "still up" {
		t.Fatalf("%q, %v", m, err)
	}
}

// BenchmarkQUICNetem moves 64 KiB messages over an emulated 20 ms round
// trip with a 100 Mbit/s bottleneck, without and with 0.5% loss.
func BenchmarkQUICNetem(b *testing.B) {
	for _, bc := range []struct {
		name string
		loss float64
	}{{"clean", 0}, {"loss0.5%", 0.005}} {
		b.Run(bc.name, func(b *testing.B) {
			st, _ := netemStack(netem.Config{Delay: 10 * time.Millisecond, Loss: bc.loss, Rate: 12_500_000})
			cli, srv, _ := pair(b, st, serverConfig(), clientConfig())
			benchBulk(b, cli, srv)
			b.ReportMetric(float64(cli.Path().RTT.Microseconds())/1000, "rtt-ms")
		})
	}
}

var _ psi.Transient = (*Transient)(nil)
