package main

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/netns"
	"github.com/postsockets/postsockets/psi"
)

func fspIn(ns *netns.NS) []psi.Stack {
	for _, s := range carrier.DefaultStacks() {
		if s.Name() == "fsp" {
			return []psi.Stack{netns.Stack(s, ns)}
		}
	}
	panic("no fsp stack")
}

// TestCurlThroughGatewaysLossy is TestCurlThroughGateways with the FSP
// hop between the gateways crossing a link between two namespaces that
// drops 2% of the packets each way (nftables numgen). curl, nginx and the
// gateways' HTTP sides stay in the test's namespace.
func TestCurlThroughGatewaysLossy(t *testing.T) {
	needCurl(t)
	if err := netns.Available(); err != nil {
		t.Skipf("the lossy link needs network namespaces (root, iproute2, nftables): %v", err)
	}
	root := t.TempDir()
	sizes := []int{0, 1, 1000, 100_000, 1 << 20, 10 << 20}
	if !testing.Short() {
		sizes = append(sizes, 100<<20)
	}
	sums := files(t, root, sizes)
	small := files(t, root, []int{10, 200, 3000, 9000, 20_000})
	origin := nginx(t, root, "")

	srv, cli := netns.New(t, "gwback"), netns.New(t, "gwfront")
	srvAddr, cliAddr := netip.MustParsePrefix("10.203.0.1/24"), netip.MustParsePrefix("10.203.0.2/24")
	netns.Link(t, srv, cli, srvAddr, cliAddr)
	for _, ns := range []*netns.NS{srv, cli} {
		if err := ns.Drop(2, ""); err != nil {
			t.Fatal(err)
		}
	}
	front := "http://" + gatewaysOn(t, origin, srvAddr.Addr().String(), fspIn(cli), fspIn(srv))
	checkTransfers(t, front, sums, small, 1000)
}

// TestH2LoadThroughGatewaysLossy is TestH2LoadThroughGateways with the FSP
// hop across the lossy namespace link.
func TestH2LoadThroughGatewaysLossy(t *testing.T) {
	needCurl(t)
	if err := netns.Available(); err != nil {
		t.Skipf("the lossy link needs network namespaces (root, iproute2, nftables): %v", err)
	}
	root := t.TempDir()
	files(t, root, []int{1000})
	origin := nginx(t, root, "")
	srv, cli := netns.New(t, "gwback"), netns.New(t, "gwfront")
	srvAddr, cliAddr := netip.MustParsePrefix("10.206.0.1/24"), netip.MustParsePrefix("10.206.0.2/24")
	netns.Link(t, srv, cli, srvAddr, cliAddr)
	for _, ns := range []*netns.NS{srv, cli} {
		if err := ns.Drop(2, ""); err != nil {
			t.Fatal(err)
		}
	}
	front := "http://" + gatewaysOn(t, origin, srvAddr.Addr().String(), fspIn(cli), fspIn(srv))
	rps, p99 := h2load(t, front, "/f1000.bin", 2000)
	t.Logf("h2load -c 1 -m 8, 2,000 requests of 1,000 bytes, 2%% loss each way on the FSP hop: %.0f req/s, p99 %v", rps, p99)
}

// TestConnectThroughGatewaysLossy: curl's CONNECT tunnels through both
// gateways to nginx with the FSP hop across the lossy namespace link;
// each tunnel is one FSP clone carrying a byte stream each way.
func TestConnectThroughGatewaysLossy(t *testing.T) {
	needCurl(t)
	if err := netns.Available(); err != nil {
		t.Skipf("the lossy link needs network namespaces (root, iproute2, nftables): %v", err)
	}
	root := t.TempDir()
	sums := files(t, root, []int{0, 1000, 1 << 20, 10 << 20})
	origin := nginx(t, root, "")
	srv, cli := netns.New(t, "gwback"), netns.New(t, "gwfront")
	srvAddr, cliAddr := netip.MustParsePrefix("10.207.0.1/24"), netip.MustParsePrefix("10.207.0.2/24")
	netns.Link(t, srv, cli, srvAddr, cliAddr)
	for _, ns := range []*netns.NS{srv, cli} {
		if err := ns.Drop(2, ""); err != nil {
			t.Fatal(err)
		}
	}
	target := strings.TrimPrefix(origin, "http://")
	front := gatewaysArgs(t, origin, srvAddr.Addr().String(), fspIn(cli), fspIn(srv), []string{"-connect", target}, nil)
	out := t.TempDir()
	for name, sum := range sums {
		dst := filepath.Join(out, name)
		code := curl(t, "-p", "-x", "http://"+front, "-o", dst, "-w", "%{http_connect} %{http_code}", origin+"/"+name)
		if got := fileSum(t, dst); got != sum || code != "200 200" {
			t.Fatalf("%s: %q sha256 %s, want %s", name, code, got, sum)
		}
	}
}
