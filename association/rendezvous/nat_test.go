package rendezvous

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postsockets/postsockets/internal/ice"
)

// The NAT tests build this network out of network namespaces:
//
//	peerA 10.0.1.2 -- 10.0.1.1 natA 203.0.113.2 --+
//	                                              pub (198.51.100.1: coturn, rendezvous)
//	peerB 10.0.2.2 -- 10.0.2.1 natB 203.0.113.6 --+
//
// natA and natB masquerade their LANs behind their public addresses. Each
// peer runs as a copy of the test binary (TestNATPeer) inside its
// namespace, since pion opens sockets from its own goroutines.

const (
	turnAddr  = "198.51.100.1"
	turnPort  = 3478
	turnUser  = "psuser"
	turnPass  = "pspass"
	turnRealm = "postsockets.test"
	natAWAN   = "203.0.113.2"
	natBWAN   = "203.0.113.6"
)

type natNet struct {
	pub, natA, natB, peerA, peerB string
	dir                           string
}

func natPrereqs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("NAT tests need root for network namespaces (CI runs as root with iproute2, nftables and coturn installed)")
	}
	for _, bin := range []string{"ip", "nft", "turnserver"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("NAT tests need %s: apt-get install -y iproute2 nftables coturn", bin)
		}
	}
	if testing.Short() {
		t.Skip("NAT tests skipped in short mode")
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func nsRun(t *testing.T, ns string, args ...string) {
	t.Helper()
	run(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

func nft(t *testing.T, ns, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s\n%s", ns, err, out, rules)
	}
}

// setupNAT builds the namespaces and starts coturn; Cleanup undoes it.
func setupNAT(t *testing.T) *natNet {
	t.Helper()
	p := fmt.Sprintf("psF%d-", os.Getpid())
	n := &natNet{pub: p + "pub", natA: p + "natA", natB: p + "natB", peerA: p + "peerA", peerB: p + "peerB", dir: t.TempDir()}
	for _, ns := range []string{n.pub, n.natA, n.natB, n.peerA, n.peerB} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		nsRun(t, ns, "ip", "link", "set", "lo", "up")
	}
	// pub: the server address and one link to each NAT.
	nsRun(t, n.pub, "ip", "addr", "add", turnAddr+"/32", "dev", "lo")
	nsRun(t, n.pub, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for i, nat := range []struct{ ns, peer, pubIf, wan, pubAddr, lan, host string }{
		{n.natA, n.peerA, "pa", natAWAN, "203.0.113.1", "10.0.1", "10.0.1.2"},
		{n.natB, n.peerB, "pb", natBWAN, "203.0.113.5", "10.0.2", "10.0.2.2"},
	} {
		_ = i
		run(t, "ip", "-n", nat.ns, "link", "add", "wan", "type", "veth", "peer", "name", nat.pubIf, "netns", n.pub)
		nsRun(t, nat.ns, "ip", "addr", "add", nat.wan+"/30", "dev", "wan")
		nsRun(t, nat.ns, "ip", "link", "set", "wan", "up")
		nsRun(t, n.pub, "ip", "addr", "add", nat.pubAddr+"/30", "dev", nat.pubIf)
		nsRun(t, n.pub, "ip", "link", "set", nat.pubIf, "up")
		nsRun(t, nat.ns, "ip", "route", "add", "default", "via", nat.pubAddr)

		run(t, "ip", "-n", nat.ns, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", nat.peer)
		nsRun(t, nat.ns, "ip", "addr", "add", nat.lan+".1/24", "dev", "lan")
		nsRun(t, nat.ns, "ip", "link", "set", "lan", "up")
		nsRun(t, nat.peer, "ip", "addr", "add", nat.host+"/24", "dev", "eth0")
		nsRun(t, nat.peer, "ip", "link", "set", "eth0", "up")
		nsRun(t, nat.peer, "ip", "route", "add", "default", "via", nat.lan+".1")

		nsRun(t, nat.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		nft(t, nat.ns, `table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade
	}
}
table ip filter {
	# Like a home router, drop unsolicited input from the WAN. This also
	# keeps conntrack from committing entries for early hole-punching
	# packets, which would make masquerade pick new ports (a symmetric
	# NAT).
	chain input {
		type filter hook input priority filter; policy drop;
		iifname { "lo", "lan" } accept
		ct state established,related accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		iifname "lan" oifname "wan" accept
		ct state established,related accept
	}
}
`)
	}
	// pub forwards unknown destinations upstream, where they vanish
	// silently as on the Internet (coturn drops an allocation whose relay
	// socket sees "network unreachable").
	nsRun(t, n.pub, "ip", "route", "add", "default", "via", natAWAN)
	n.startTURN(t)
	return n
}

// blockDirect drops UDP between the two NATs' public addresses, leaving
// only the path through the TURN relay.
func (n *natNet) blockDirect(t *testing.T) {
	nft(t, n.pub, fmt.Sprintf(`table ip block {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr %[1]s ip daddr %[2]s drop
		ip saddr %[2]s ip daddr %[1]s drop
	}
}
`, natAWAN, natBWAN))
}

func (n *natNet) startTURN(t *testing.T) {
	t.Helper()
	logPath := filepath.Join(n.dir, "turnserver.log")
	if dir := os.Getenv("PS_NAT_DEBUG"); strings.HasPrefix(dir, "/") {
		logPath = filepath.Join(dir, "turnserver.log")
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.pub, "turnserver", "-n",
		"--listening-ip="+turnAddr, "--relay-ip="+turnAddr, "--listening-port="+strconv.Itoa(turnPort),
		"--lt-cred-mech", "--user="+turnUser+":"+turnPass, "--realm="+turnRealm,
		"--no-tls", "--no-dtls", "--no-cli", "--no-multicast-peers",
		"--denied-peer-ip=10.0.0.0-10.255.255.255",
		"--min-port=50000", "--max-port=50999",
		"--pidfile="+filepath.Join(n.dir, "turnserver.pid"), "--log-file=stdout", "--simple-log", "-v")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("turnserver log (tail):\n%s", tail(b, 3000))
		}
	})
	// Wait until coturn answers a STUN binding request.
	err = inNetns(n.pub, func() error {
		c, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		defer c.Close()
		req := make([]byte, 20)
		binary.BigEndian.PutUint16(req[0:], 0x0001)
		binary.BigEndian.PutUint32(req[4:], 0x2112A442)
		copy(req[8:], "postsockets!")
		to := &net.UDPAddr{IP: net.ParseIP(turnAddr), Port: turnPort}
		buf := make([]byte, 1500)
		for range 100 {
			c.WriteTo(req, to)
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := c.ReadFrom(buf); err == nil && n >= 20 && binary.BigEndian.Uint16(buf) == 0x0101 {
				return nil
			}
		}
		return errors.New("coturn does not answer STUN")
	})
	if err != nil {
		t.Fatal(err)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// inNetns runs f on an OS thread switched to network namespace ns. Sockets
// f opens stay in ns.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		err = f()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			// Only a thread back in its own namespace may be reused;
			// otherwise it exits with this goroutine.
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// startRendezvous serves a rendezvous Server in the pub namespace.
func (n *natNet) startRendezvous(t *testing.T) string {
	t.Helper()
	var ln net.Listener
	if err := inNetns(n.pub, func() (err error) {
		ln, err = net.Listen("tcp4", turnAddr+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rs := &Server{MaxWait: 2 * time.Second}
	hs := &http.Server{Handler: rs}
	done := make(chan struct{})
	go func() { hs.Serve(ln); close(done) }()
	t.Cleanup(func() { rs.Close(); hs.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// peerResult is what TestNATPeer prints.
type peerResult struct {
	Local, Remote string // candidate types
	RemoteAddr    string
	Controlling   bool
	Hello         string // the message received from the peer
	SHA256        string // of the file sent or received
	Bytes         int
	Seconds       float64
	Transport     string
	Err           string
}

const resultPrefix = "PSRESULT "

// runPeers runs alice in peerA and bob in peerB and returns their results.
func (n *natNet) runPeers(t *testing.T, url string, size int) (alice, bob peerResult) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]peerResult, 2)
	for i, p := range []struct{ ns, self, peer string }{{n.peerA, "alice", "bob"}, {n.peerB, "bob", "alice"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, "ip", "netns", "exec", p.ns, exe, "-test.run=^TestNATPeer$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(),
				"PS_NAT_SELF="+p.self, "PS_NAT_PEER="+p.peer, "PS_NAT_RDV="+url,
				"PS_NAT_SIZE="+strconv.Itoa(size))
			out, err := cmd.CombinedOutput()
			if dir := os.Getenv("PS_NAT_DEBUG"); strings.HasPrefix(dir, "/") {
				os.WriteFile(filepath.Join(dir, p.self+".log"), out, 0o644)
			}
			r := &results[i]
			for line := range strings.Lines(string(out)) {
				if s, ok := strings.CutPrefix(strings.TrimSpace(line), resultPrefix); ok {
					if err := json.Unmarshal([]byte(s), r); err != nil {
						r.Err = err.Error()
					}
				}
			}
			if err != nil && r.Err == "" {
				r.Err = err.Error()
			}
			if r.Err != "" || err != nil {
				t.Logf("%s output:\n%s", p.self, tail(out, 4000))
			}
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.Err != "" {
			t.Fatalf("peer %d: %s", i, r.Err)
		}
	}
	return results[0], results[1]
}

// TestNATPeer is one peer of the NAT tests, run by runPeers as a
// subprocess inside a peer namespace. It does nothing otherwise.
func TestNATPeer(t *testing.T) {
	self := os.Getenv("PS_NAT_SELF")
	if self == "" {
		t.Skip("helper for the NAT tests")
	}
	var res peerResult
	err := natPeer(self, os.Getenv("PS_NAT_PEER"), os.Getenv("PS_NAT_RDV"), &res)
	if err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", resultPrefix, b)
}

func natPeer(self, peer, url string, res *peerResult) error {
	size, _ := strconv.Atoi(os.Getenv("PS_NAT_SIZE"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var logger *slog.Logger
	if os.Getenv("PS_NAT_DEBUG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	}
	s, err := Connect(ctx, ConnectConfig{
		Self: self, Peer: peer, RendezvousURL: url,
		ICE: ice.Config{
			NetworkTypes: []string{ice.UDP4},
			Logger:       logger,
			STUN:         []string{fmt.Sprintf("stun:%s:%d", turnAddr, turnPort)},
			TURN: []ice.TURNServer{{
				URL:      fmt.Sprintf("turn:%s:%d?transport=udp", turnAddr, turnPort),
				Username: turnUser, Password: turnPass,
			}},
		},
	})
	if err != nil {
		return err
	}
	defer s.Close()
	res.Local, res.Remote = string(s.Local.Type), string(s.Remote.Type)
	res.RemoteAddr, res.Controlling = s.PeerAddr.String(), s.Controlling
	return transfer(ctx, s, size, res)
}

// transfer says hello both ways over FSP, then the controlling side sends
// size pseudo-random bytes and the other returns their SHA-256.
func transfer(ctx context.Context, s *Session, size int, res *peerResult) error {
	res.Transport = "fsp"
	c, err := s.FSP(ctx, fspConfig())
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMessage(ctx, []byte("hello from "+os.Getenv("PS_NAT_SELF"))); err != nil {
		return err
	}
	m, err := c.ReceiveMessage(ctx)
	if err != nil {
		return err
	}
	res.Hello = string(m)
	start := time.Now()
	const chunk = 256 << 10
	if s.Controlling {
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{1, 2, 3}).Read(data)
		sum := sha256.Sum256(data)
		res.SHA256, res.Bytes = hex.EncodeToString(sum[:]), size
		for off := 0; off < len(data); off += chunk {
			if err := c.SendMessage(ctx, data[off:min(off+chunk, len(data))]); err != nil {
				return err
			}
		}
		if err := c.SendMessage(ctx, nil); err != nil { // end of file
			return err
		}
		m, err := c.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		if string(m) != res.SHA256 {
			return fmt.Errorf("peer got SHA-256 %s, sent %s", m, res.SHA256)
		}
	} else {
		h := sha256.New()
		for {
			m, err := c.ReceiveMessage(ctx)
			if err != nil {
				return err
			}
			if len(m) == 0 {
				break
			}
			h.Write(m)
			res.Bytes += len(m)
		}
		res.SHA256 = hex.EncodeToString(h.Sum(nil))
		if err := c.SendMessage(ctx, []byte(res.SHA256)); err != nil {
			return err
		}
		// Wait for the sender to close, so the last message is not
		// lost with our socket.
		c.ReceiveMessage(ctx)
	}
	res.Seconds = time.Since(start).Seconds()
	return nil
}

func fileSize() int {
	if testing.Short() {
		return 1 << 20
	}
	return 10 << 20
}

func checkTransfer(t *testing.T, alice, bob peerResult) {
	t.Helper()
	if !alice.Controlling || bob.Controlling {
		t.Errorf("controlling: alice %v, bob %v", alice.Controlling, bob.Controlling)
	}
	if alice.Hello != "hello from bob" || bob.Hello != "hello from alice" {
		t.Errorf("hellos: alice got %q, bob got %q", alice.Hello, bob.Hello)
	}
	if alice.SHA256 != bob.SHA256 || bob.Bytes != fileSize() {
		t.Errorf("file: sent %d bytes %s, received %d bytes %s", alice.Bytes, alice.SHA256, bob.Bytes, bob.SHA256)
	}
	t.Logf("alice %s->%s (peer %s), bob %s->%s (peer %s); %d bytes over %s in %.2fs (%.1f MB/s)",
		alice.Local, alice.Remote, alice.RemoteAddr, bob.Local, bob.Remote, bob.RemoteAddr,
		bob.Bytes, alice.Transport, alice.Seconds, float64(bob.Bytes)/alice.Seconds/1e6)
}

func TestNATDirect(t *testing.T) {
	natPrereqs(t)
	n := setupNAT(t)
	url := n.startRendezvous(t)
	alice, bob := n.runPeers(t, url, fileSize())
	checkTransfer(t, alice, bob)
	for _, r := range []peerResult{alice, bob} {
		if r.Local == string(ice.Relay) || r.Remote == string(ice.Relay) {
			t.Errorf("direct path expected, selected %s->%s", r.Local, r.Remote)
		}
	}
	// Through the NATs the peers see each other's public addresses.
	if !strings.HasPrefix(alice.RemoteAddr, natBWAN+":") || !strings.HasPrefix(bob.RemoteAddr, natAWAN+":") {
		t.Errorf("peer addresses: alice sees %s, bob sees %s", alice.RemoteAddr, bob.RemoteAddr)
	}
}

func TestNATRelay(t *testing.T) {
	natPrereqs(t)
	n := setupNAT(t)
	n.blockDirect(t)
	url := n.startRendezvous(t)
	alice, bob := n.runPeers(t, url, fileSize())
	checkTransfer(t, alice, bob)
	for _, r := range []peerResult{alice, bob} {
		if r.Local != string(ice.Relay) && r.Remote != string(ice.Relay) {
			t.Errorf("relayed path expected, selected %s->%s", r.Local, r.Remote)
		}
	}
}
