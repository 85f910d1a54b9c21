// Command p2p is a peer-to-peer chat over Post Sockets. Two peers that
// know each other's peer IDs meet at a rendezvous server
// (examples/rendezvous): each calls carrier.Initiate with a Remote naming
// the other peer and the server, ICE finds a path through their NATs, and
// FSP runs over it (QUIC where the policy prohibits FSP). Each peer proves
// its key to the server and to the other peer; a peer ID is the digest of
// a key, so no one else can answer for it. Lines from stdin go to the peer as messages; received lines are
// printed.
//
//	go run ./examples/rendezvous -listen 127.0.0.1:8080
//	go run ./examples/p2p -key alice.pem -id     # prints alice's peer ID
//	go run ./examples/p2p -key bob.pem -id       # prints bob's peer ID
//	go run ./examples/p2p -key alice.pem -peer <bob's ID> -loopback
//	go run ./examples/p2p -key bob.pem -peer <alice's ID> -loopback
//
// -key creates the key file on first use. With -demo it runs a server and
// two peers with fresh keys in one process.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func main() {
	url := flag.String("rendezvous", "http://127.0.0.1:8080", "rendezvous server URL")
	keyFile := flag.String("key", "", "this peer's key file (PEM), created if missing; empty means a new key for this run")
	showID := flag.Bool("id", false, "print this peer's ID and exit")
	peer := flag.String("peer", "", "the other peer's ID")
	stun := flag.String("stun", "", "comma-separated stun:host:port servers")
	turn := flag.String("turn", "", "turn:host:port relay server")
	turnUser := flag.String("turn-user", "", "TURN username")
	turnPass := flag.String("turn-pass", "", "TURN password")
	loopback := flag.Bool("loopback", false, "offer loopback addresses only (both peers on one host)")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for the peer")
	demo := flag.Bool("demo", false, "run a rendezvous server and two peers in this process")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *demo {
		if err := runDemo(ctx, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "p2p:", err)
			os.Exit(1)
		}
		return
	}
	key, err := loadKey(*keyFile, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "p2p:", err)
		os.Exit(1)
	}
	if *showID {
		fmt.Println(key.ID)
		return
	}
	fmt.Fprintf(os.Stderr, "this peer's ID (give it to the other side): %s\n", key.ID)
	peerID, err := rendezvous.ParsePeerID(*peer)
	if err != nil {
		fmt.Fprintln(os.Stderr, "p2p: -peer must be the other peer's ID (it prints it at start, or with -id)")
		os.Exit(2)
	}
	cfg := config(key, "peer", peerID, *loopback)
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, s := range strings.Split(*stun, ",") {
		if s != "" {
			cfg.Policy.ICEServers = append(cfg.Policy.ICEServers, policy.ICEServer{URL: s})
		}
	}
	if *turn != "" {
		cfg.Policy.ICEServers = append(cfg.Policy.ICEServers, policy.ICEServer{URL: *turn, Username: *turnUser, Password: *turnPass})
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	fmt.Fprintf(os.Stderr, "waiting for %s at %s...\n", peerID, *url)
	c, err := carrier.Initiate(cctx, post.Remote{Peer: "peer", Rendezvous: *url}, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "p2p:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "connected to %s over %s: %s (%s)\n", peerID, c.Stack(), c.Path(), c.Path().Interface)
	if err := chat(ctx, c, "peer", os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "p2p:", err)
		os.Exit(1)
	}
}

// loadKey reads the key in file, creating the file with a new key if it
// does not exist; an empty name means a new key that is not saved.
func loadKey(file string, log io.Writer) (*rendezvous.Key, error) {
	if file == "" {
		return rendezvous.GenerateKey()
	}
	data, err := os.ReadFile(file)
	if err == nil {
		return rendezvous.ParseKeyPEM(data)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key, err := rendezvous.GenerateKey()
	if err != nil {
		return nil, err
	}
	pemData, err := key.MarshalPEM()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(pemData); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "created a new key in %s\n", file)
	return key, nil
}

// config is the Carrier configuration of a peer with key that knows the
// other peer by name, pinned to its ID.
func config(key *rendezvous.Key, name string, peer rendezvous.PeerID, loopback bool) *carrier.Config {
	return &carrier.Config{
		Security: psi.Security{Certificates: []tls.Certificate{key.Certificate}},
		Rendezvous: association.RendezvousConfig{
			IncludeLoopback: loopback, IPv4Only: loopback,
			Peers: map[string]rendezvous.PeerID{name: peer},
		},
	}
}

// chat sends each line of in as a message and prints each message
// received, until in ends, the peer closes or ctx ends. It closes c.
func chat(ctx context.Context, c *carrier.Carrier, peer string, in io.Reader, out io.Writer) error {
	errc := make(chan error, 2)
	go func() {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				errc <- err
				return
			}
			fmt.Fprintf(out, "%s: %s\n", peer, m.Content)
		}
	}()
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			if err := c.Send(ctx, append([]byte(nil), sc.Bytes()...)); err != nil {
				errc <- err
				return
			}
		}
		errc <- sc.Err() // nil at end of input
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	c.Close() // flushes what was sent
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, post.ErrClosed) && ctx.Err() == nil {
		return err
	}
	return nil
}

// pair connects alice and bob, holding the given keys, through the
// rendezvous server at url.
func pair(ctx context.Context, url string, ka, kb *rendezvous.Key) (alice, bob *carrier.Carrier, err error) {
	type res struct {
		c   *carrier.Carrier
		err error
	}
	bc := make(chan res, 1)
	go func() {
		c, err := carrier.Initiate(ctx, post.Remote{Peer: "alice", Rendezvous: url}, config(kb, "alice", ka.ID, true))
		bc <- res{c, err}
	}()
	alice, err = carrier.Initiate(ctx, post.Remote{Peer: "bob", Rendezvous: url}, config(ka, "bob", kb.ID, true))
	b := <-bc
	if err != nil || b.err != nil {
		if alice != nil {
			alice.Close()
		}
		if b.c != nil {
			b.c.Close()
		}
		return nil, nil, errors.Join(err, b.err)
	}
	return alice, b.c, nil
}

// runDemo starts a rendezvous server on loopback, connects alice and bob
// through it and has bob answer alice's lines.
func runDemo(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	rs := rendezvous.NewServer(rendezvous.Config{})
	hs := &http.Server{Handler: rs, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	defer rs.Close()
	url := "http://" + ln.Addr().String()
	fmt.Fprintln(out, "rendezvous server at", url)

	ka, err := rendezvous.GenerateKey()
	if err != nil {
		return err
	}
	kb, err := rendezvous.GenerateKey()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "alice is %s\nbob is %s\n", ka.ID, kb.ID)
	alice, bob, err := pair(ctx, url, ka, kb)
	if err != nil {
		return err
	}
	defer alice.Close()
	fmt.Fprintf(out, "alice -> bob over %s on %s (%s)\n", alice.Stack(), alice.Path(), alice.Path().Interface)

	// Bob answers every line until alice closes.
	done := make(chan error, 1)
	go func() {
		defer bob.Close()
		for {
			m, err := bob.Receive(ctx)
			if err != nil {
				done <- nil
				return
			}
			if err := bob.Send(ctx, []byte("got "+strings.ToUpper(string(m.Content)))); err != nil {
				done <- err
				return
			}
		}
	}()
	for _, line := range []string{"hello bob", "this is FSP over ICE"} {
		fmt.Fprintf(out, "alice: %s\n", line)
		if err := alice.Send(ctx, []byte(line)); err != nil {
			return err
		}
		m, err := alice.Receive(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "bob: %s\n", m.Content)
	}
	alice.Close()
	return <-done
}
