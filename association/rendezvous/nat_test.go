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
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postsockets/postsockets/internal/ice"
	"github.com/postsockets/postsockets/internal/netns"
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
//
// They need root, iproute2, nftables and coturn (turnserver), and skip
// otherwise. PS_NAT_DEBUG=/some/dir keeps the peers' debug logs and the
// coturn log there.

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
	pub, natA, natB, peerA, peerB *netns.NS
	dir                           string
	// stacks is what both peers offer to run over the path, comma
	// separated; empty means the default (FSP).
	stacks string
	// carrier runs each peer as a P2P Carrier with FSP prohibited
	// (NATCarrierPeer) instead of on a bare Session.
	carrier bool
}

// NATResult is what a NAT test peer reports.
type NATResult = peerResult

// NATCarrierPeer, set by the external carrier_nat_test.go, runs one NAT
// test peer as a P2P Carrier holding key, asking for peer through the
// rendezvous server at url with the test network's STUN and TURN server.
// The carrier package imports this one, so only an external test can.
var NATCarrierPeer func(ctx context.Context, key *Key, peer PeerID, url string, ice []NATICEServer, size int, res *NATResult) error

// NATICEServer is a STUN or TURN server of the test network.
type NATICEServer struct{ URL, Username, Password string }

func natPrereqs(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("NAT tests skipped in short mode")
	}
	if err := netns.Available(); err != nil {
		t.Skipf("NAT tests need root, iproute2 and nftables (CI: apt-get install -y iproute2 nftables coturn): %v", err)
	}
	if _, err := exec.LookPath("turnserver"); err != nil {
		t.Skip("NAT tests need turnserver: apt-get install -y coturn")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// setupNAT builds the namespaces and starts coturn; Cleanup undoes it.
// Both NATs map endpoint-independently (one public port per socket) and
// filter by address and port. With symmetricA, natA instead picks a new
// random port for every destination, as a symmetric NAT does.
func setupNAT(t *testing.T, symmetricA bool) *natNet {
	t.Helper()
	pfx := netip.MustParsePrefix
	n := &natNet{
		pub:  netns.New(t, "pub"),
		natA: netns.New(t, "natA"), natB: netns.New(t, "natB"),
		peerA: netns.New(t, "peerA"), peerB: netns.New(t, "peerB"),
		dir: t.TempDir(),
	}
	// pub: the server address, and one link to each NAT.
	must(t, n.pub.AddAddr("lo", pfx(turnAddr+"/32")))
	must(t, n.pub.EnableForwarding())
	for _, nat := range []struct {
		ns, peer            *netns.NS
		wan, pubAddr, lanGW string
		symmetric           bool
	}{
		{n.natA, n.peerA, natAWAN, "203.0.113.1", "10.0.1.1", symmetricA},
		{n.natB, n.peerB, natBWAN, "203.0.113.5", "10.0.2.1", false},
	} {
		wan := netns.Link(t, nat.ns, n.pub, pfx(nat.wan+"/30"), pfx(nat.pubAddr+"/30"))
		must(t, nat.ns.DefaultRoute(netip.MustParseAddr(nat.pubAddr)))
		lanAddr := netip.MustParseAddr(nat.lanGW)
		lan := netns.Link(t, nat.ns, nat.peer, netip.PrefixFrom(lanAddr, 24), netip.PrefixFrom(lanAddr.Next(), 24))
		must(t, nat.peer.DefaultRoute(lanAddr))
		must(t, nat.ns.EnableForwarding())
		if nat.symmetric {
			must(t, nat.ns.Nft(fmt.Sprintf(`table ip pst_symnat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %q masquerade random
	}
}
`, wan.AName)))
		} else {
			must(t, nat.ns.Masquerade(wan.AName))
		}
		must(t, nat.ns.Nft(fmt.Sprintf(`table ip pst_fw {
	# Like a home router, drop unsolicited input from the WAN. This also
	# keeps conntrack from committing entries for early hole-punching
	# packets, which would make masquerade pick new ports (a symmetric
	# NAT).
	chain input {
		type filter hook input priority filter; policy drop;
		iifname { "lo", %[2]q } accept
		ct state established,related accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		iifname %[2]q oifname %[1]q accept
		ct state established,related accept
	}
}
`, wan.AName, lan.AName)))
	}
	// pub forwards unknown destinations upstream, where they vanish
	// silently as on the Internet (coturn drops an allocation whose relay
	// socket sees "network unreachable").
	must(t, n.pub.DefaultRoute(netip.MustParseAddr(natAWAN)))
	n.startTURN(t)
	return n
}

// blockDirect drops UDP between the two NATs' public addresses, leaving
// only the path through the TURN relay.
func (n *natNet) blockDirect(t *testing.T) {
	must(t, n.pub.Nft(fmt.Sprintf(`table ip block {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr %[1]s ip daddr %[2]s drop
		ip saddr %[2]s ip daddr %[1]s drop
	}
}
`, natAWAN, natBWAN)))
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
	cmd := exec.Command("ip", "netns", "exec", n.pub.Name(), "turnserver", "-n",
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
	err = func() error {
		c, err := n.pub.ListenPacket("udp4", "0.0.0.0:0")
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
	}()
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

// startRendezvous serves a rendezvous Server in the pub namespace.
func (n *natNet) startRendezvous(t *testing.T, cfg Config) string {
	t.Helper()
	ln, err := n.pub.Listen("tcp4", turnAddr+":0")
	must(t, err)
	cfg.MaxWait = 2 * time.Second
	rs := NewServer(cfg)
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

// natRole is what one peer process does: it holds the test key of key,
// registers as self's ID (normally key's own) and asks for peer's.
type natRole struct{ key, self, peer string }

var alicePeer, bobPeer = natRole{"alice", "alice", "bob"}, natRole{"bob", "bob", "alice"}

// runPeers runs alice in peerA and bob in peerB and returns their results.
func (n *natNet) runPeers(t *testing.T, url string, size int) (alice, bob peerResult) {
	t.Helper()
	r := n.run(t, url, size, 0, alicePeer, bobPeer)
	for i, r := range r {
		if r.Err != "" {
			t.Fatalf("peer %d: %s", i, r.Err)
		}
	}
	return r[0], r[1]
}

// run runs roles a in peerA and b in peerB, each for at most timeout
// (zero means 90 s), and returns their results.
func (n *natNet) run(t *testing.T, url string, size int, timeout time.Duration, a, b natRole) []peerResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]peerResult, 2)
	for i, p := range []struct {
		ns *netns.NS
		natRole
	}{{n.peerA, a}, {n.peerB, b}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, "ip", "netns", "exec", p.ns.Name(), exe, "-test.run=^TestNATPeer$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(),
				"PS_NAT_KEY="+p.key, "PS_NAT_SELF="+p.self, "PS_NAT_PEER="+p.peer, "PS_NAT_RDV="+url,
				"PS_NAT_SIZE="+strconv.Itoa(size), "PS_NAT_TIMEOUT="+timeout.String(), "PS_NAT_STACKS="+n.stacks, "PS_NAT_CARRIER="+strconv.FormatBool(n.carrier))
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
			if (r.Err != "" || err != nil) && testing.Verbose() {
				t.Logf("%s output:\n%s", p.self, tail(out, 4000))
			}
		}()
	}
	wg.Wait()
	return results
}

// TestNATPeer is one peer of the NAT tests, run by runPeers as a
// subprocess inside a peer namespace. It does nothing otherwise.
func TestNATPeer(t *testing.T) {
	self := os.Getenv("PS_NAT_SELF")
	if self == "" {
		t.Skip("helper for the NAT tests")
	}
	var res peerResult
	role := natRole{key: os.Getenv("PS_NAT_KEY"), self: self, peer: os.Getenv("PS_NAT_PEER")}
	err := natPeer(role, os.Getenv("PS_NAT_RDV"), &res)
	if err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", resultPrefix, b)
}

func natPeer(role natRole, url string, res *peerResult) error {
	size, _ := strconv.Atoi(os.Getenv("PS_NAT_SIZE"))
	timeout, _ := time.ParseDuration(os.Getenv("PS_NAT_TIMEOUT"))
	if timeout <= 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var logger *slog.Logger
	if os.Getenv("PS_NAT_DEBUG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	}
	if os.Getenv("PS_NAT_CARRIER") == "true" {
		if NATCarrierPeer == nil {
			return errors.New("no NATCarrierPeer")
		}
		return NATCarrierPeer(ctx, testKey(role.key), id(role.peer), url, []NATICEServer{
			{URL: fmt.Sprintf("stun:%s:%d", turnAddr, turnPort)},
			{URL: fmt.Sprintf("turn:%s:%d?transport=udp", turnAddr, turnPort), Username: turnUser, Password: turnPass},
		}, size, res)
	}
	var stacks []string
	if v := os.Getenv("PS_NAT_STACKS"); v != "" {
		stacks = strings.Split(v, ",")
	}
	s, err := Connect(ctx, ConnectConfig{
		Key: testKey(role.key), Self: id(role.self), Peer: id(role.peer), RendezvousURL: url,
		Stacks: stacks,
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

// transfer says hello both ways over the stack the peers agreed on, then
// the controlling side sends size pseudo-random bytes and the other
// returns their SHA-256.
func transfer(ctx context.Context, s *Session, size int, res *peerResult) error {
	res.Transport = s.Stack
	c, err := s.Establish(ctx, stackByName(s.Stack), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := send(ctx, c, []byte("hello from "+os.Getenv("PS_NAT_SELF"))); err != nil {
		return err
	}
	m, err := receive(ctx, c)
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
			if err := send(ctx, c, data[off:min(off+chunk, len(data))]); err != nil {
				return err
			}
		}
		if err := send(ctx, c, nil); err != nil { // end of file
			return err
		}
		m, err := receive(ctx, c)
		if err != nil {
			return err
		}
		if string(m) != res.SHA256 {
			return fmt.Errorf("peer got SHA-256 %s, sent %s", m, res.SHA256)
		}
	} else {
		h := sha256.New()
		for {
			m, err := receive(ctx, c)
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
		if err := send(ctx, c, []byte(res.SHA256)); err != nil {
			return err
		}
		// Wait for the sender to close, so the last message is not
		// lost with our socket.
		receive(ctx, c)
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
	if alice.Controlling != Controlling(id("alice"), id("bob")) || bob.Controlling == alice.Controlling {
		t.Errorf("controlling: alice %v, bob %v", alice.Controlling, bob.Controlling)
	}
	if alice.Hello != "hello from bob" || bob.Hello != "hello from alice" {
		t.Errorf("hellos: alice got %q, bob got %q", alice.Hello, bob.Hello)
	}
	sender, receiver := alice, bob
	if bob.Controlling {
		sender, receiver = bob, alice
	}
	if sender.SHA256 != receiver.SHA256 || receiver.Bytes != fileSize() {
		t.Errorf("file: sent %d bytes %s, received %d bytes %s", sender.Bytes, sender.SHA256, receiver.Bytes, receiver.SHA256)
	}
	t.Logf("alice %s->%s (peer %s), bob %s->%s (peer %s); %d bytes over %s in %.2fs (%.1f MB/s)",
		alice.Local, alice.Remote, alice.RemoteAddr, bob.Local, bob.Remote, bob.RemoteAddr,
		receiver.Bytes, sender.Transport, sender.Seconds, float64(receiver.Bytes)/sender.Seconds/1e6)
}

func TestNATDirect(t *testing.T) {
	natPrereqs(t)
	n := setupNAT(t, false)
	url := n.startRendezvous(t, Config{})
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
	n := setupNAT(t, false)
	n.blockDirect(t)
	url := n.startRendezvous(t, Config{})
	alice, bob := n.runPeers(t, url, fileSize())
	checkTransfer(t, alice, bob)
	for _, r := range []peerResult{alice, bob} {
		if r.Local != string(ice.Relay) && r.Remote != string(ice.Relay) {
			t.Errorf("relayed path expected, selected %s->%s", r.Local, r.Remote)
		}
	}
}

// TestNATSymmetric puts alice behind a symmetric NAT and bob behind a
// port-restricted one: no direct path exists, so they use the relay.
func TestNATSymmetric(t *testing.T) {
	natPrereqs(t)
	n := setupNAT(t, true)
	url := n.startRendezvous(t, Config{})
	alice, bob := n.runPeers(t, url, fileSize())
	checkTransfer(t, alice, bob)
	for _, r := range []peerResult{alice, bob} {
		if r.Local != string(ice.Relay) && r.Remote != string(ice.Relay) {
			t.Errorf("relayed path expected, selected %s->%s", r.Local, r.Remote)
		}
	}
}

// TestNATQUIC: peers that offer QUIC alone, as an Association with FSP
// prohibited does, run QUIC over the ICE pair through the two NATs.
func TestNATQUIC(t *testing.T) {
	natPrereqs(t)
	n := setupNAT(t, false)
	n.stacks = "quic"
	url := n.startRendezvous(t, Config{})
	alice, bob := n.runPeers(t, url, fileSize())
	checkTransfer(t, alice, bob)
	if alice.Transport != "quic" || bob.Transport != "quic" {
		t.Errorf("stacks: alice %s, bob %s", alice.Transport, bob.Transport)
	}
}

// TestNATCarrierQUIC: two P2P Carriers whose policy prohibits FSP meet
// through the two NATs and run QUIC over the ICE pair.
func TestNATCarrierQUIC(t *testing.T) {
	natPrereqs(t)
	n := setupNAT(t, false)
	n.carrier = true
	url := n.startRendezvous(t, Config{})
	alice, bob := n.runPeers(t, url, fileSize())
	checkTransfer(t, alice, bob)
	if alice.Transport != "quic" || bob.Transport != "quic" {
		t.Errorf("stacks: alice %s, bob %s", alice.Transport, bob.Transport)
	}
}

// nameAround returns a test key name whose ID sorts before (or after)
// the ID of name, so that its holder is (or is not) the controlling side.
func nameAround(name string, before bool) string {
	for i := 0; ; i++ {
		n := "bob" + strconv.Itoa(i)
		if (id(n) < id(name)) == before {
			return n
		}
	}
}

// TestNATImpersonation: mallory, behind NAT A, claims alice's ID towards
// bob behind NAT B. An honest server refuses mallory. A compromised one
// matches them and ICE finds a path, but the handshake refuses mallory
// whichever side listens, on FSP and on QUIC: nobody says hello, and both
// sides report the authentication failure.
func TestNATImpersonation(t *testing.T) {
	natPrereqs(t)
	for _, stack := range []string{"fsp", "quic"} {
		t.Run(stack, func(t *testing.T) { natImpersonation(t, stack) })
	}
}

func natImpersonation(t *testing.T, stack string) {
	n := setupNAT(t, false)
	n.stacks = stack
	honest := n.startRendezvous(t, Config{})
	r := n.run(t, honest, 0, 3*time.Second, natRole{"mallory", "alice", "bob"}, bobPeer)
	if !strings.Contains(r[0].Err, "not signed by the key") {
		t.Errorf("mallory at an honest server: %q", r[0].Err)
	}
	if r[1].Err == "" || r[1].Hello != "" {
		t.Errorf("bob at an honest server: %+v", r[1])
	}

	evil := n.startRendezvous(t, Config{InsecureSkipAuth: true})
	for _, bobListens := range []bool{true, false} {
		bob := nameAround("alice", !bobListens)
		// Both ends finish as soon as the handshake refuses mallory
		// (2-3 s at load 20-24); the bound only stops a hang.
		r := n.run(t, evil, 0, 20*time.Second, natRole{"mallory", "alice", bob}, natRole{bob, bob, "alice"})
		t.Logf("bob listens %v: mallory %+v; bob %+v", bobListens, r[0], r[1])
		if r[0].Hello != "" || r[1].Hello != "" || r[0].Err == "" || r[1].Err == "" {
			t.Fatalf("mallory and bob talked: %+v, %+v", r[0], r[1])
		}
		if r[0].RemoteAddr != "" && r[0].Controlling != bobListens {
			t.Errorf("mallory controlling %v, bob listens %v", r[0].Controlling, bobListens)
		}
		// The dialler learns it from the handshake, the listener from its
		// stack's refusal of the dialler.
		for i, who := range []string{"mallory", "bob"} {
			if !strings.Contains(r[i].Err, "authentication failed") {
				t.Errorf("%s's error %q, want an authentication failure", who, r[i].Err)
			}
		}
	}
}
