package cases

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/internal/attack"
	"github.com/postsockets/postsockets/psi"
)

var offer = rendezvous.Offer{
	Ufrag:      "abcd",
	Pwd:        "abcdefghijklmnopqrstuvwx",
	Candidates: []string{"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"},
}

// exchangeDial is one legitimate rendezvous: two fresh peers that name
// each other must both get the other's offer.
func exchangeDial(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		ka, err := rendezvous.GenerateKey()
		if err != nil {
			return err
		}
		kb, err := rendezvous.GenerateKey()
		if err != nil {
			return err
		}
		errc := make(chan error, 1)
		go func() {
			_, err := (&rendezvous.Client{URL: url, Key: kb}).Exchange(ctx, ka.ID, offer)
			errc <- err
		}()
		_, err = (&rendezvous.Client{URL: url, Key: ka}).Exchange(ctx, kb.ID, offer)
		if err2 := <-errc; err == nil {
			err = err2
		}
		return err
	}
}

// attackerAddr is where the rendezvous attackers come from; the
// legitimate clients use 127.0.0.1.
var attackerAddr = netip.MustParseAddr("127.0.0.2")

// RendezvousFill has one client (one address, a fresh key for every 16
// registrations) register as fast as 64 workers can, each hanging up
// 30 ms into its long poll.
func RendezvousFill(o attack.Options) (*attack.Result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := rendezvous.NewServer(rendezvous.Config{})
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer func() { srv.Close(); hs.Close() }()
	url := "http://" + ln.Addr().String()
	var mu sync.Mutex
	var posted, peak int
	errs := map[string]int{}
	c := attack.Case{
		Name:   "Rendezvous fill",
		Budget: 64 << 20,
		Dial:   exchangeDial(url),
		Attack: func(ctx context.Context, b *attack.Bytes) {
			hc := attack.ClientFrom(attackerAddr)
			defer hc.CloseIdleConnections()
			var wg sync.WaitGroup
			// 64 workers, fewer in a slower build (attack.Paced): still
			// more requests than the server admits from one source.
			for range attack.Paced(64) {
				wg.Go(func() {
					for ctx.Err() == nil {
						k, err := rendezvous.GenerateKey()
						if err != nil {
							return
						}
						cl := &rendezvous.Client{URL: url, HTTP: hc, Key: k}
						for range 16 {
							rctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
							_, err := cl.Exchange(rctx, randomPeer(), offer)
							cancel()
							mu.Lock()
							posted++
							peak = max(peak, srv.Len())
							if err != nil {
								errs[shortErr(err)]++
							}
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
		},
		Check: func() (string, error) {
			return fmt.Sprintf("%d registrations attempted, at most %d entries held, %d after", posted, peak, srv.Len()), nil
		},
	}
	return attack.Run(c, o), nil
}

// randomPeer returns a fresh peer ID to name. Only the registering
// client's own key signs anything: the ID of a peer that never shows up
// needs no key, and making one (an Ed25519 key and a self-signed
// certificate) is CPU the attacker would take from the server and the
// legitimate client in this process, which the server never sees.
func randomPeer() rendezvous.PeerID {
	var p psi.Pin
	rand.Read(p[:])
	return rendezvous.IDFromPin(p)
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// RendezvousSlowBody runs the example rendezvous server binary and keeps
// 300 connections from one address that send a request body one byte
// every 500 ms, reconnecting when the server hangs up.
func RendezvousSlowBody(o attack.Options) (*attack.Result, error) {
	return rendezvousSlowBody(o, "Rendezvous slow-body clients", "./examples/rendezvous", "-listen")
}

// CLIRendezvousSlowBody is RendezvousSlowBody against the rendezvous
// server of the command-line tool, `postsockets rendezvous ADDR`.
func CLIRendezvousSlowBody(o attack.Options) (*attack.Result, error) {
	return rendezvousSlowBody(o, "postsockets rendezvous slow-body clients", "./cmd/postsockets", "rendezvous")
}

// rendezvousSlowBody builds pkg and runs it with args and the address to
// listen on.
func rendezvousSlowBody(o attack.Options, name, pkg string, args ...string) (*attack.Result, error) {
	bin, err := buildCommand(pkg)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(filepath.Dir(bin))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, append(args, addr)...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	url := "http://" + addr
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Since(start) > 10*time.Second {
			return nil, fmt.Errorf("%s did not start", pkg)
		}
	}
	var held, most int
	var longest time.Duration
	c := attack.Case{
		Name: name,
		Dial: exchangeDial(url),
		Attack: func(ctx context.Context, b *attack.Bytes) {
			held, most, longest = attack.SlowBody(ctx, attackerAddr, netip.MustParseAddrPort(addr), "/exchange", 300, 500*time.Millisecond)
		},
		Check: func() (string, error) {
			note := fmt.Sprintf("300 slow clients reconnecting: %d connected at most, %d at the end, the longest for %v",
				most, held, longest.Round(100*time.Millisecond))
			if most > 64 {
				return note, fmt.Errorf("the server held %d connections from one address", most)
			}
			// The servers' ReadTimeout is 10 s.
			if longest > 12*time.Second {
				return note, fmt.Errorf("a slow client stayed connected for %v", longest)
			}
			return note, nil
		},
	}
	return attack.Run(c, o), nil
}

// buildCommand builds the command pkg (./examples/rendezvous) of this
// module into a temporary directory and returns the binary's path.
func buildCommand(pkg string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	name := filepath.Base(pkg)
	dir, err := os.MkdirTemp("", "attack-"+name)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building %s: %v: %s", pkg, err, out)
	}
	return bin, nil
}
