// Package netns builds throwaway Linux network namespaces for tests:
// namespaces joined by veth pairs, routing and forwarding, and nftables
// rules for NAT (masquerade) and random or selective packet drops.
//
// It needs root, the ip tool (iproute2) and nft (nftables); Available
// reports why it cannot run, and Require skips a test with that reason.
// Linux tc/netem is not used, so kernels without sch_netem work.
//
// Names include the process id and random bits, so parallel test
// packages do not collide; all names start with "pst". Everything is
// removed with t.Cleanup.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Available returns nil if namespaces can be made here, or an error that
// says why not.
func Available() error {
	if runtime.GOOS != "linux" {
		return errors.New("netns: needs Linux")
	}
	if os.Geteuid() != 0 {
		return errors.New("netns: needs root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("netns: %s not found (install iproute2 and nftables): %w", tool, err)
		}
	}
	name := uniqueName("probe")
	if err := run(nil, "ip", "netns", "add", name); err != nil {
		return fmt.Errorf("netns: cannot create a namespace: %w", err)
	}
	defer run(nil, "ip", "netns", "del", name)
	if err := run(nil, "ip", "netns", "exec", name, "nft", "list", "ruleset"); err != nil {
		return fmt.Errorf("netns: nft does not work in a namespace: %w", err)
	}
	return nil
}

// Require skips the test unless Available.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

// NS is a network namespace, or the test process's own namespace (Host).
type NS struct {
	name string // empty for the host
}

// Host returns the namespace the test process runs in. Commands run
// there directly, and it is never deleted.
func Host() *NS { return &NS{} }

// uniqueName returns "pst<pid>-<random>-<name>".
func uniqueName(name string) string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("pst%d-%s-%s", os.Getpid(), hex.EncodeToString(b[:]), name)
}

// shortName returns a unique interface name of at most 15 bytes.
func shortName(suffix string) string {
	var b [4]byte
	rand.Read(b[:])
	return "pst" + hex.EncodeToString(b[:]) + suffix
}

// New creates a namespace with its loopback up, removed when the test
// ends. It skips the test if namespaces are not Available.
func New(t testing.TB, name string) *NS {
	t.Helper()
	Require(t)
	n := &NS{name: uniqueName(name)}
	if err := run(nil, "ip", "netns", "add", n.name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run(nil, "ip", "netns", "del", n.name); err != nil {
			t.Errorf("netns: %v", err)
		}
	})
	if err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return n
}

// Name is the namespace's name, as "ip netns" knows it; empty for Host.
func (n *NS) Name() string { return n.name }

func (n *NS) String() string {
	if n.name == "" {
		return "host"
	}
	return n.name
}

// run executes a command, returning its output in the error on failure.
func run(stdin []byte, name string, args ...string) error {
	_, err := output(stdin, name, args...)
	return err
}

func output(stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "),
			err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (n *NS) command(args []string) (string, []string) {
	if n.name == "" {
		return args[0], args[1:]
	}
	return "ip", append([]string{"netns", "exec", n.name}, args...)
}

// Run runs a command inside the namespace.
func (n *NS) Run(args ...string) error {
	_, err := n.Exec(args...)
	return err
}

// Exec runs a command inside the namespace and returns its stdout. On
// failure the error includes stderr.
func (n *NS) Exec(args ...string) (string, error) {
	name, rest := n.command(args)
	return output(nil, name, rest...)
}

// SNMP returns the namespace's counter name of protocol proto ("Tcp",
// "Udp") from /proc/net/snmp, such as ("Tcp", "OutRsts").
func (n *NS) SNMP(proto, name string) (int, error) {
	out, err := n.Exec("cat", "/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	var names []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, nm := range names {
			if nm == name && i < len(f) {
				return strconv.Atoi(f[i])
			}
		}
	}
	return 0, fmt.Errorf("netns: no %s %s in /proc/net/snmp", proto, name)
}

// Nft feeds an nftables script to nft inside the namespace.
func (n *NS) Nft(script string) error {
	name, rest := n.command([]string{"nft", "-f", "-"})
	return run([]byte(script), name, rest...)
}

// ListenPacket is net.ListenPacket inside the namespace.
func (n *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// ListenUDP opens a UDP socket on addr inside the namespace.
func (n *NS) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

// Listen is net.Listen inside the namespace.
func (n *NS) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// DialContext connects from inside the namespace. The socket is made and
// connected on a thread in the namespace; the wait happens there too.
func (n *NS) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Veth is a veth pair: end A in one namespace, end B in another.
type Veth struct {
	A, B         *NS
	AName, BName string       // interface names
	AAddr, BAddr netip.Prefix // addresses given at creation
}

// Link joins a and b with a veth pair, gives the ends the addresses (an
// invalid Prefix means none) and brings them up. IPv6 addresses skip
// duplicate address detection so they are usable at once.
func Link(t testing.TB, a, b *NS, aAddr, bAddr netip.Prefix) *Veth {
	t.Helper()
	v := &Veth{A: a, B: b, AName: shortName("a"), BName: shortName("b"), AAddr: aAddr, BAddr: bAddr}
	if err := run(nil, "ip", "link", "add", v.AName, "type", "veth", "peer", "name", v.BName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Deleting either end removes both; a namespace already deleted
		// took its end with it.
		a.Run("ip", "link", "del", v.AName)
	})
	for _, end := range []struct {
		ns   *NS
		dev  string
		addr netip.Prefix
	}{{a, v.AName, aAddr}, {b, v.BName, bAddr}} {
		if end.ns.name != "" {
			if err := run(nil, "ip", "link", "set", end.dev, "netns", end.ns.name); err != nil {
				t.Fatal(err)
			}
		}
		if end.addr.IsValid() {
			if err := end.ns.AddAddr(end.dev, end.addr); err != nil {
				t.Fatal(err)
			}
		}
		if err := end.ns.SetLinkUp(end.dev, true); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// SetUp brings both ends up or down.
func (v *Veth) SetUp(up bool) error {
	if err := v.A.SetLinkUp(v.AName, up); err != nil {
		return err
	}
	return v.B.SetLinkUp(v.BName, up)
}

// SetLinkUp brings an interface up or down.
func (n *NS) SetLinkUp(dev string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return n.Run("ip", "link", "set", dev, state)
}

// MoveLink moves an interface into another namespace. The interface
// arrives down and without addresses.
func (n *NS) MoveLink(dev string, to *NS) error {
	target := to.name
	if target == "" {
		target = strconv.Itoa(os.Getpid())
	}
	return n.Run("ip", "link", "set", dev, "netns", target)
}

// AddAddr adds an address to an interface.
func (n *NS) AddAddr(dev string, p netip.Prefix) error {
	args := []string{"ip", "addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return n.Run(args...)
}

// DelAddr removes an address from an interface.
func (n *NS) DelAddr(dev string, p netip.Prefix) error {
	return n.Run("ip", "addr", "del", p.String(), "dev", dev)
}

// AddRoute routes dst via a gateway, replacing any route to dst.
func (n *NS) AddRoute(dst netip.Prefix, via netip.Addr) error {
	return n.Run("ip", "route", "replace", dst.String(), "via", via.String())
}

// DefaultRoute sets the default route of via's family.
func (n *NS) DefaultRoute(via netip.Addr) error {
	dst := netip.MustParsePrefix("0.0.0.0/0")
	if via.Is6() {
		dst = netip.MustParsePrefix("::/0")
	}
	return n.AddRoute(dst, via)
}

// EnableForwarding turns on IPv4 and IPv6 forwarding.
func (n *NS) EnableForwarding() error {
	return n.Do(func() error {
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(f, []byte("1\n"), 0); err != nil {
				return fmt.Errorf("netns: %w", err)
			}
		}
		return nil
	})
}

// Masquerade makes the namespace a NAT: traffic leaving through outDev
// gets outDev's address as its source (IPv4 and IPv6).
func (n *NS) Masquerade(outDev string) error {
	return n.Nft(fmt.Sprintf(`table inet pst_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %s masquerade
	}
}
`, strconv.Quote(outDev)))
}

const dropTable = `table inet pst_drop {
	chain prerouting {
		type filter hook prerouting priority -300; policy accept;
	}
	chain output {
		type filter hook output priority -300; policy accept;
	}
}
`

// Drop drops percent (0..100) of the packets that arrive in the
// namespace and match the nft expression match (empty for all), chosen
// at random. Arriving packets include those a router forwards, in both
// directions. Rules add up; ClearDrops removes them all.
func (n *NS) Drop(percent int, match string) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netns: drop percentage %d out of range", percent)
	}
	rule := match + " drop"
	if percent < 100 {
		rule = fmt.Sprintf("%s numgen random mod 100 < %d drop", match, percent)
	}
	return n.Nft(dropTable + "add rule inet pst_drop prerouting " + rule + "\n")
}

// DropOutput is Drop for packets the namespace itself sends.
func (n *NS) DropOutput(percent int, match string) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netns: drop percentage %d out of range", percent)
	}
	rule := match + " drop"
	if percent < 100 {
		rule = fmt.Sprintf("%s numgen random mod 100 < %d drop", match, percent)
	}
	return n.Nft(dropTable + "add rule inet pst_drop output " + rule + "\n")
}

// BlockUDP drops all UDP arriving in or sent from the namespace, leaving
// TCP alone, as a firewall that only lets TCP through.
func (n *NS) BlockUDP() error {
	if err := n.Drop(100, "meta l4proto udp"); err != nil {
		return err
	}
	return n.DropOutput(100, "meta l4proto udp")
}

// ClearDrops removes every rule added by Drop, DropOutput and BlockUDP.
func (n *NS) ClearDrops() error {
	return n.Nft(dropTable + "flush table inet pst_drop\n")
}
