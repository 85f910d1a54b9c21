package cases

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/internal/attack"
)

var offer = rendezvous.Offer{
	Ufrag:      "abcd",
	Pwd:        "abcdefghijklmnopqrstuvwx",
	Candidates: []string{"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"},
}

var pairs atomic.Int64

// exchangeDial is one legitimate rendezvous: two fresh peers that name
// each other must both get the other's offer.
func exchangeDial(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		n := pairs.Add(1)
		a, b := fmt.Sprintf("alice-%d", n), fmt.Sprintf("bob-%d", n)
		cl := &rendezvous.Client{URL: url}
		errc := make(chan error, 1)
		go func() { _, err := cl.Exchange(ctx, b, a, offer); errc <- err }()
		_, err := cl.Exchange(ctx, a, b, offer)
		if err2 := <-errc; err == nil {
			err = err2
		}
		return err
	}
}

// RendezvousFill registers fresh names as fast as 64 workers can, each
// hanging up 10 ms into its long poll, from one client.
func RendezvousFill(o attack.Options) (*attack.Result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &rendezvous.Server{}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer func() { srv.Close(); hs.Close() }()
	url := "http://" + ln.Addr().String()
	var n int
	var codes map[int]int
	c := attack.Case{
		Name:   "Rendezvous fill",
		Budget: 64 << 20,
		Dial:   exchangeDial(url),
		Attack: func(ctx context.Context, b *attack.Bytes) {
			n, codes = attack.PostFlood(ctx, url+"/exchange", 64, 10*time.Millisecond, func(i int) []byte {
				body, _ := json.Marshal(map[string]any{"self": fmt.Sprintf("m-%d", i), "peer": fmt.Sprintf("v-%d", i), "offer": offer})
				return body
			})
		},
		Check: func() (string, error) {
			return fmt.Sprintf("%d registrations posted (status: %v), %d entries held after", n, codes, srv.Len()), nil
		},
	}
	return attack.Run(c, o), nil
}

// RendezvousSlowBody runs the example rendezvous server binary and holds
// 300 connections that send a request body one byte every 500 ms.
func RendezvousSlowBody(o attack.Options) (*attack.Result, error) {
	bin, err := buildExample("rendezvous")
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
	cmd := exec.Command(bin, "-listen", addr)
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
			return nil, fmt.Errorf("example rendezvous server did not start")
		}
	}
	var held, most int
	c := attack.Case{
		Name: "Rendezvous slow-body clients",
		Dial: exchangeDial(url),
		Attack: func(ctx context.Context, b *attack.Bytes) {
			held, most = attack.SlowBody(ctx, netip.MustParseAddrPort(addr), "/exchange", 300, 500*time.Millisecond)
		},
		Check: func() (string, error) {
			return fmt.Sprintf("%d slow clients connected at most, %d still connected at the end", most, held), nil
		},
	}
	return attack.Run(c, o), nil
}

// buildExample builds ./examples/<name> of this module into a temporary
// directory and returns the binary's path.
func buildExample(name string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	dir, err := os.MkdirTemp("", "attack-"+name)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./examples/"+name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building examples/%s: %v: %s", name, err, out)
	}
	return bin, nil
}
