package carrier_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// mtuTransfer sends total bytes in 1 MiB messages from a Carrier dialled
// from cli to a listener in srv over one required stack, and checks
// their SHA-256 at the receiver. mid runs once a quarter arrived. It
// returns the sender's path.
func mtuTransfer(t *testing.T, srv, cli *netns.NS, sa netip.Addr, stack string, chain tls.Certificate, total int, mid func()) post.Path {
	t.Helper()
	ctx := confCtx(t, 120*time.Second)
	scfg, ccfg := serverConfig(), clientConfig()
	scfg.Security.Certificates = []tls.Certificate{chain}
	scfg.Stacks, ccfg.Stacks = nsStacks(srv), nsStacks(cli)
	scfg.Policy.Stack(stack, policy.Require)
	ccfg.Policy.Stack(stack, policy.Require)
	l, err := carrier.Listen(ctx, post.Local{Addr: netip.AddrPortFrom(sa, 0)}, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	remote := l.Remote(sa.String())
	remote.ServerName = "localhost"
	c, err := carrier.Initiate(ctx, remote, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	const size = 1 << 20
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		pattern := random(size)
		for i := 0; i < total/size; i++ {
			msg := append([]byte(nil), pattern...) // Send may keep it
			binary.BigEndian.PutUint64(msg, uint64(i))
			want.Write(msg)
			if err := c.Send(ctx, msg); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
	got := sha256.New()
	start := time.Now()
	for i := 0; i < total/size; i++ {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		got.Write(m.Content)
		if i == total/size/4 {
			mid()
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("SHA-256 mismatch")
	}
	if c.Stack() != stack {
		t.Fatalf("ran over %s", c.Stack())
	}
	d := time.Since(start)
	t.Logf("%s: %d MB in %v (%.0f MB/s)", stack, total>>20, d.Round(time.Millisecond), float64(total)/1e6/d.Seconds())
	return c.Path()
}

// TestNetnsMTU1280AllStacks: over a link whose MTU is 1,280 and that
// drops IP fragments, with a server chain of about 6 KB, every stack
// connects and a 100 MB transfer completes with matching SHA-256 (over
// IPv4; 20 MB over IPv6, where 1,232 bytes of UDP payload fill the
// link exactly).
func TestNetnsMTU1280AllStacks(t *testing.T) {
	netns.Require(t)
	t.Run("ipv4", func(t *testing.T) {
		mtu1280(t, netip.MustParsePrefix("10.207.0.1/24"), netip.MustParsePrefix("10.207.0.2/24"), 100<<20, 1280-28)
	})
	t.Run("ipv6", func(t *testing.T) {
		mtu1280(t, netip.MustParsePrefix("fd00:207::1/64"), netip.MustParsePrefix("fd00:207::2/64"), 20<<20, 1280-48)
	})
}

func mtu1280(t *testing.T, sa, ca netip.Prefix, total, maxUDP int) {
	srv, cli := netns.New(t, "m12s"), netns.New(t, "m12c")
	v := netns.Link(t, srv, cli, sa, ca)
	for _, e := range []struct {
		ns  *netns.NS
		dev string
	}{{srv, v.AName}, {cli, v.BName}} {
		if err := e.ns.Run("ip", "link", "set", "dev", e.dev, "mtu", "1280"); err != nil {
			t.Fatal(err)
		}
		for _, drop := range []func(int, string) error{e.ns.Drop, e.ns.DropOutput} {
			for _, frag := range []string{"ip frag-off & 0x3fff != 0", "exthdr frag exists"} {
				if err := drop(100, frag); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	chain, err := certs.LongChain(6000)
	if err != nil {
		t.Fatal(err)
	}
	if testing.Short() {
		total = 10 << 20
	}
	for _, st := range benchStacks {
		t.Run(st, func(t *testing.T) {
			p := mtuTransfer(t, srv, cli, sa.Addr(), st, chain, total, func() {})
			t.Logf("%s: path MTU %d", st, p.MTU)
			if p.MTU > 1280 || st != "tcp" && p.MTU > maxUDP {
				t.Fatalf("path MTU %d over a 1,280-byte link", p.MTU)
			}
		})
	}
}

// TestNetnsMTUBlackHoleAllStacks: across a router, the link toward the
// receiver falls from 1,500 to 1,280 bytes in the middle of a transfer
// and the router drops larger packets silently (its ICMP errors are
// dropped). Each stack completes the transfer intact: FSP and QUIC by
// their packetization-layer path MTU discovery, TCP by Linux's MTU
// probing (net.ipv4.tcp_mtu_probing=1 in the sender's namespace; it is
// off by default, and TCP then stalls on such a black hole). FSP's path
// MTU must have fallen.
func TestNetnsMTUBlackHoleAllStacks(t *testing.T) {
	netns.Require(t)
	cli, rtr, srv := netns.New(t, "mbc"), netns.New(t, "mbr"), netns.New(t, "mbs")
	cr, rc := netip.MustParsePrefix("10.208.1.2/24"), netip.MustParsePrefix("10.208.1.1/24")
	sr, rs := netip.MustParsePrefix("10.208.2.2/24"), netip.MustParsePrefix("10.208.2.1/24")
	netns.Link(t, cli, rtr, cr, rc)
	vs := netns.Link(t, srv, rtr, sr, rs)
	if err := rtr.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	if err := cli.DefaultRoute(rc.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := srv.DefaultRoute(rs.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := cli.Run("sysctl", "-q", "-w", "net.ipv4.tcp_mtu_probing=1"); err != nil {
		t.Fatal(err)
	}
	if err := rtr.DropOutput(100, "icmp type destination-unreachable"); err != nil {
		t.Fatal(err)
	}
	chain, err := certs.LongChain(6000)
	if err != nil {
		t.Fatal(err)
	}
	total := 40 << 20
	if testing.Short() {
		total = 10 << 20
	}
	// The client sends; data leaves the router toward the server.
	for _, st := range benchStacks {
		t.Run(st, func(t *testing.T) {
			if err := rtr.Run("ip", "link", "set", "dev", vs.BName, "mtu", "1500"); err != nil {
				t.Fatal(err)
			}
			var fell time.Time
			p := mtuTransfer(t, srv, cli, sr.Addr(), st, chain, total, func() {
				if err := rtr.Run("ip", "link", "set", "dev", vs.BName, "mtu", "1280"); err != nil {
					t.Error(err)
				}
				fell = time.Now()
			})
			t.Logf("%s: path MTU %d at the end; the last three quarters took %v", st, p.MTU, time.Since(fell))
			if st == "fsp" && p.MTU > 1280-28 {
				t.Fatalf("path MTU %d after the fall", p.MTU)
			}
		})
	}
}
