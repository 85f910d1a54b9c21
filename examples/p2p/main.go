// Command p2p is a peer-to-peer chat over FSP. Two peers that name each
// other meet at a rendezvous server (examples/rendezvous), connect through
// their NATs with ICE, then send lines from stdin as FSP messages and
// print the lines they receive.
//
//	go run ./examples/rendezvous -listen :8080
//	go run ./examples/p2p -rendezvous http://127.0.0.1:8080 -self alice -peer bob
//	go run ./examples/p2p -rendezvous http://127.0.0.1:8080 -self bob -peer alice
//
// With -demo it runs a server and both peers in one process.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/internal/ice"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

func main() {
	url := flag.String("rendezvous", "http://127.0.0.1:8080", "rendezvous server URL")
	self := flag.String("self", "", "this peer's name")
	peer := flag.String("peer", "", "the other peer's name")
	psk := flag.String("psk", "postsockets p2p example", "pre-shared key both peers use to authenticate each other")
	stun := flag.String("stun", "", "comma-separated stun:host:port servers")
	turn := flag.String("turn", "", "turn:host:port relay server")
	turnUser := flag.String("turn-user", "", "TURN username")
	turnPass := flag.String("turn-pass", "", "TURN password")
	loopback := flag.Bool("loopback", false, "also offer loopback addresses (both peers on one host without other interfaces)")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for the peer")
	demo := flag.Bool("demo", false, "run a rendezvous server and two peers in this process")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()

	var log *slog.Logger
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if *demo {
		if err := runDemo(ctx, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "p2p:", err)
			os.Exit(1)
		}
		return
	}
	if len(*psk) < 16 {
		fmt.Fprintln(os.Stderr, "p2p: -psk must be at least 16 bytes")
		os.Exit(2)
	}
	if *self == "" || *peer == "" {
		fmt.Fprintln(os.Stderr, "p2p: -self and -peer are required (or use -demo)")
		os.Exit(2)
	}
	cfg := rendezvous.ConnectConfig{Self: *self, Peer: *peer, RendezvousURL: *url}
	cfg.ICE.IncludeLoopback = *loopback
	cfg.ICE.Logger = log
	if *stun != "" {
		cfg.ICE.STUN = strings.Split(*stun, ",")
	}
	if *turn != "" {
		cfg.ICE.TURN = []ice.TURNServer{{URL: *turn, Username: *turnUser, Password: *turnPass}}
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	fmt.Fprintf(os.Stderr, "waiting for %s at %s...\n", *peer, *url)
	s, c, err := connect(cctx, cfg, []byte(*psk))
	if err != nil {
		fmt.Fprintln(os.Stderr, "p2p:", err)
		os.Exit(1)
	}
	defer s.Close()
	defer c.Close()
	fmt.Fprintf(os.Stderr, "connected to %s: %s -> %s\n", *peer, s.Local, s.Remote)
	if err := chat(ctx, c, *peer, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "p2p:", err)
		os.Exit(1)
	}
}

// connect meets the peer and opens an FSP connection to it.
func connect(ctx context.Context, cfg rendezvous.ConnectConfig, psk []byte) (*rendezvous.Session, *fsp.Conn, error) {
	s, err := rendezvous.Connect(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	c, err := s.FSP(ctx, &fsp.Config{Security: psi.Security{PSK: psk}})
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, c, nil
}

// chat sends each line of in as a message and prints each message
// received, until in ends, the peer closes or ctx ends.
func chat(ctx context.Context, c *fsp.Conn, peer string, in io.Reader, out io.Writer) error {
	errc := make(chan error, 2)
	go func() {
		for {
			m, err := c.ReceiveMessage(ctx)
			if err != nil {
				errc <- err
				return
			}
			fmt.Fprintf(out, "%s: %s\n", peer, m)
		}
	}()
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			if err := c.SendMessage(ctx, sc.Bytes()); err != nil {
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
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
		return err
	}
	return nil
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
	rs := &rendezvous.Server{}
	hs := &http.Server{Handler: rs}
	go hs.Serve(ln)
	defer hs.Close()
	defer rs.Close()
	url := "http://" + ln.Addr().String()
	fmt.Fprintln(out, "rendezvous server at", url)

	iceCfg := ice.Config{
		NetworkTypes:    []string{ice.UDP4},
		IncludeLoopback: true,
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() },
	}
	psk := []byte("postsockets p2p demo pre-shared key")
	var (
		wg     sync.WaitGroup
		bs     *rendezvous.Session
		bc     *fsp.Conn
		errBob error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		bs, bc, errBob = connect(ctx, rendezvous.ConnectConfig{Self: "bob", Peer: "alice", RendezvousURL: url, ICE: iceCfg}, psk)
	}()
	as, ac, err := connect(ctx, rendezvous.ConnectConfig{Self: "alice", Peer: "bob", RendezvousURL: url, ICE: iceCfg}, psk)
	wg.Wait()
	if err != nil || errBob != nil {
		if as != nil {
			ac.Close()
			as.Close()
		}
		if bs != nil {
			bc.Close()
			bs.Close()
		}
		return errors.Join(err, errBob)
	}
	defer as.Close()
	defer bs.Close()
	fmt.Fprintf(out, "alice (%s) -> bob (%s), alice is controlling: %v\n", as.Local, as.Remote, as.Controlling)

	// Bob answers every line until alice closes.
	done := make(chan error, 1)
	go func() {
		defer bc.Close()
		for {
			m, err := bc.ReceiveMessage(ctx)
			if err != nil {
				done <- nil
				return
			}
			if err := bc.SendMessage(ctx, []byte("got "+strings.ToUpper(string(m)))); err != nil {
				done <- err
				return
			}
		}
	}()
	for _, line := range []string{"hello bob", "this is FSP over ICE"} {
		fmt.Fprintf(out, "alice: %s\n", line)
		if err := ac.SendMessage(ctx, []byte(line)); err != nil {
			return err
		}
		m, err := ac.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "bob: %s\n", m)
	}
	ac.Close()
	return <-done
}
