//go:build linux

package carrier_test

import (
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postsockets/postsockets/internal/netns"
)

// The veth path of BenchmarkHeadOfLine has no delay, so it measures loss
// recovery at microsecond round trips. Here the two namespaces are joined
// instead by a TUN device in each and a user-space delay line between
// them that holds every IP packet for a fixed one-way delay, TCP and UDP
// alike (kernel TCP sees the real round trip, unlike through a TCP relay);
// nftables drops 2% each way as before.

const holOneWay = 10 * time.Millisecond // round trip 20 ms

var (
	holTunSrv = netip.MustParseAddr("10.202.0.1")
	holTunCli = netip.MustParseAddr("10.202.0.2")
)

// openTun makes a TUN device in ns. The device belongs to the namespace
// of the thread that opens /dev/net/tun.
func openTun(ns *netns.NS, name string) (*os.File, error) {
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun") // non-blocking: Close stops a Read
		return nil
	})
	return f, err
}

// delayLine copies packets from one TUN to the other, each delay after it
// was read, until from is closed.
func delayLine(from, to *os.File, delay time.Duration, wg *sync.WaitGroup) {
	type pkt struct {
		at time.Time
		b  []byte
	}
	q := make(chan pkt, 1<<16)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for p := range q {
			if d := time.Until(p.at); d > 0 {
				time.Sleep(d)
			}
			to.Write(p.b)
		}
	}()
	go func() {
		defer wg.Done()
		defer close(q)
		for {
			b := make([]byte, 2048)
			n, err := from.Read(b)
			if err != nil {
				return
			}
			q <- pkt{time.Now().Add(delay), b[:n]}
		}
	}()
}

// newHolTunNet is newHolNet with a delay line instead of a veth pair.
func newHolTunNet(tb testing.TB, oneWay time.Duration) *holNet {
	tb.Helper()
	if err := netns.Available(); err != nil {
		tb.Skipf("head-of-line measurements need network namespaces (root, iproute2, nftables): %v", err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		tb.Skipf("no TUN device for the delay line: %v", err)
	}
	n := &holNet{srv: netns.New(tb, "holsrv"), cli: netns.New(tb, "holcli"), srvAddr: holTunSrv, baseRTT: 2 * oneWay}
	var files []*os.File
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		for _, f := range files {
			f.Close()
		}
		wg.Wait()
	})
	for _, end := range []struct {
		ns         *netns.NS
		addr, peer netip.Addr
	}{{n.srv, holTunSrv, holTunCli}, {n.cli, holTunCli, holTunSrv}} {
		f, err := openTun(end.ns, "holtun")
		if err != nil {
			tb.Skipf("cannot make a TUN device: %v", err)
		}
		files = append(files, f)
		if err := end.ns.Run("ip", "addr", "add", end.addr.String()+"/32", "peer", end.peer.String()+"/32", "dev", "holtun"); err != nil {
			tb.Fatal(err)
		}
		if err := end.ns.SetLinkUp("holtun", true); err != nil {
			tb.Fatal(err)
		}
	}
	delayLine(files[0], files[1], oneWay, &wg)
	delayLine(files[1], files[0], oneWay, &wg)
	return n
}

// BenchmarkHeadOfLineRTT is BenchmarkHeadOfLine over a 20 ms round trip
// (paced flows only: request/response would take 4x as long).
func BenchmarkHeadOfLineRTT(b *testing.B) {
	benchHol(b, newHolTunNet(b, holOneWay), []holMode{holPaced})
}
