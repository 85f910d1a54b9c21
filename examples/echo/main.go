// Command echo is a Post Sockets echo server and client.
//
//	go run ./examples/echo                 # server and client in one process
//	go run ./examples/echo -mode server -listen 127.0.0.1:18003        # prints the key clients need
//	go run ./examples/echo -mode client -remote 127.0.0.1:18003 -psk <hex key> hello
//
// Both ends authenticate each other with a pre-shared key, which is never
// built in: the demo and a server without -psk make up a random one. Every
// stack the policy allows is raced, and the winner is printed.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func main() {
	mode := flag.String("mode", "demo", "demo, server or client")
	listen := flag.String("listen", "127.0.0.1:18003", "server address")
	remote := flag.String("remote", "127.0.0.1:18003", "client's remote")
	pskHex := flag.String("psk", "", "pre-shared key in hex (at least 16 bytes); the server makes one up if empty")
	pskFile := flag.String("psk-file", "", "file holding the pre-shared key in hex")
	stack := flag.String("stack", "", "require one stack (fsp, quic, tcp)")
	verbose := flag.Bool("v", false, "log racing decisions")
	flag.Parse()
	log.SetFlags(0)

	psk, err := loadPSK(*mode, *pskHex, *pskFile)
	if err != nil {
		log.Fatal("echo: ", err)
	}
	cfg := &carrier.Config{Security: psi.Security{PSK: psk}}
	if *stack != "" {
		cfg.Policy.Stack(*stack, policy.Require)
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := os.Stdout
	switch *mode {
	case "demo":
		err = demo(ctx, w, cfg)
	case "server":
		fmt.Fprintf(w, "server: clients need -psk %x\n", psk)
		err = serve(ctx, w, *listen, cfg, nil)
	case "client":
		err = client(ctx, w, post.RemoteName(*remote), cfg, flag.Args())
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		log.Fatal("echo: ", err)
	}
}

// loadPSK takes the key from -psk or -psk-file. There is no built-in key:
// the demo and a server without one make up a random key, and a client
// must be given the server's.
func loadPSK(mode, h, file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		h = strings.TrimSpace(string(b))
	}
	if h == "" {
		if mode == "client" {
			return nil, errors.New("a client needs the server's key: -psk or -psk-file")
		}
		k := make([]byte, 32)
		rand.Read(k)
		return k, nil
	}
	k, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("-psk: %v", err)
	}
	if len(k) < 16 {
		return nil, errors.New("-psk: shorter than 16 bytes")
	}
	return k, nil
}

// serve echoes every message on every Carrier, and on every fork of it.
func serve(ctx context.Context, w io.Writer, addr string, cfg *carrier.Config, ready chan<- *carrier.Listener) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	l, err := carrier.Listen(ctx, post.Local{Addr: ap}, cfg)
	if err != nil {
		return err
	}
	defer l.Close()
	for name, a := range l.Addrs() {
		fmt.Fprintf(w, "server: listening on %s %s\n", name, a)
	}
	if ready != nil {
		ready <- l
	}
	for {
		c, err := l.Accept(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, post.ErrClosed) {
				return nil
			}
			return err
		}
		fmt.Fprintf(w, "server: accepted a carrier over %s from %s\n", c.Stack(), c.Path().Remote)
		go echo(ctx, w, c, "server")
	}
}

func echo(ctx context.Context, w io.Writer, c *carrier.Carrier, who string) {
	defer c.Close()
	go func() {
		for {
			f, err := c.AcceptFork(ctx)
			if err != nil {
				return
			}
			fmt.Fprintf(w, "%s: accepted a fork\n", who)
			go echo(ctx, w, f, who+"/fork")
		}
	}()
	for {
		m, err := c.Receive(ctx)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				fmt.Fprintf(w, "%s: receive: %v\n", who, err)
			}
			return
		}
		fmt.Fprintf(w, "%s: received %d bytes, echoing\n", who, len(m.Content))
		if err := c.Send(ctx, m.Content); err != nil {
			fmt.Fprintf(w, "%s: send: %v\n", who, err)
			return
		}
	}
}

func client(ctx context.Context, w io.Writer, r post.Remote, cfg *carrier.Config, words []string) error {
	if len(words) == 0 {
		words = []string{"hello, post sockets"}
	}
	c, err := carrier.Initiate(ctx, r, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	win, _ := c.Association().Winner()
	fmt.Fprintf(w, "client: initiated over %s on %s after %d attempt(s)\n", c.Stack(), c.Path(), win.Attempts)
	for _, s := range words {
		done := make(chan post.SendEvent, 1)
		m := &post.Message{Content: []byte(s), OnEvent: func(e post.SendEvent) { done <- e }}
		if err := c.SendMsg(ctx, m); err != nil {
			return err
		}
		fmt.Fprintf(w, "client: message %d (%d bytes) %s\n", m.ID, len(s), (<-done).Kind)
		reply, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "client: echo of %d bytes: %q\n", len(reply.Content), abbrev(reply.Content))
	}
	return nil
}

func demo(ctx context.Context, w io.Writer, cfg *carrier.Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan *carrier.Listener, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, w, "127.0.0.1:0", cfg, ready) }()
	var l *carrier.Listener
	select {
	case l = <-ready:
	case err := <-errc:
		return err
	}
	r := l.Remote("127.0.0.1")
	if err := client(ctx, w, r, cfg, []string{"hello, post sockets", strings.Repeat("x", 100000)}); err != nil {
		return err
	}

	// A second Carrier with a fork, and a message whose lifetime is
	// already over when it would be sent.
	c, err := carrier.Initiate(ctx, r, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	f, err := c.Fork(ctx)
	if errors.Is(err, post.ErrNotSupported) {
		fmt.Fprintf(w, "client: %s cannot fork: %v\n", c.Stack(), err)
		fmt.Fprintln(w, "demo: done")
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(w, "client: forked a carrier over %s\n", f.Stack())
	if err := f.Send(ctx, []byte("via the fork")); err != nil {
		return err
	}
	m, err := f.Receive(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "client: fork echo %q\n", m.Content)

	// A message whose lifetime is over before it can be sent is dropped
	// and reported, not sent late.
	ev := make(chan post.SendEvent, 2)
	stale := &post.Message{Content: []byte("stale"), Properties: post.Properties{Lifetime: time.Nanosecond},
		OnEvent: func(e post.SendEvent) { ev <- e }}
	if err := f.SendMsg(ctx, stale); err != nil {
		return err
	}
	fmt.Fprintf(w, "client: message with a 1 ns lifetime: %s\n", (<-ev).Kind)
	fmt.Fprintln(w, "demo: done")
	cancel()
	return nil
}

func abbrev(b []byte) string {
	if len(b) <= 40 {
		return string(b)
	}
	return string(b[:20]) + "..." + string(b[len(b)-10:])
}
