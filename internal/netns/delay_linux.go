package netns

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// DelayLink joins a and b by a TUN device in each (named dev) and a
// user-space delay line between them that holds every IP packet for
// oneWay, TCP and UDP alike, so kernel TCP sees the real round trip. The
// ends get the addresses aAddr and bAddr as point-to-point peers. Drop
// rules apply to it as to a veth pair. Everything is removed when the test
// ends.
func DelayLink(t testing.TB, a, b *NS, dev string, aAddr, bAddr netip.Addr, oneWay time.Duration) error {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("netns: no TUN device: %w", err)
	}
	var files []*os.File
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, f := range files {
			f.Close()
		}
		wg.Wait()
	})
	for _, end := range []struct {
		ns         *NS
		addr, peer netip.Addr
	}{{a, aAddr, bAddr}, {b, bAddr, aAddr}} {
		f, err := openTun(end.ns, dev)
		if err != nil {
			return err
		}
		files = append(files, f)
		if err := end.ns.Run("ip", "addr", "add", end.addr.String()+"/32", "peer", end.peer.String()+"/32", "dev", dev); err != nil {
			return err
		}
		if err := end.ns.SetLinkUp(dev, true); err != nil {
			return err
		}
	}
	delayLine(files[0], files[1], oneWay, &wg)
	delayLine(files[1], files[0], oneWay, &wg)
	return nil
}

// openTun makes a TUN device in ns. The device belongs to the namespace
// of the thread that opens /dev/net/tun.
func openTun(ns *NS, name string) (*os.File, error) {
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
