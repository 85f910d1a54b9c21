// Command httpfsp serves and fetches HTTP over FSP clones with
// httpcarrier: a plain http.Handler on the server, a plain http.Client on
// the client, and every request on a clone of its own.
//
//	go run ./examples/httpfsp                  # server and client in one process
//	go run ./examples/httpfsp -mode server -listen 127.0.0.1:18080   # prints the key clients need
//	go run ./examples/httpfsp -mode client -remote 127.0.0.1:18080 -psk <hex> /hello
//
// Both ends authenticate each other with a pre-shared key; there is none
// built in: the demo and a server without -psk make up a random one.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/netip"
	"os"
	"strings"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func main() {
	mode := flag.String("mode", "demo", "demo, server or client")
	listen := flag.String("listen", "127.0.0.1:18080", "server address")
	remote := flag.String("remote", "127.0.0.1:18080", "client's origin host:port")
	pskHex := flag.String("psk", "", "pre-shared key in hex (at least 16 bytes)")
	flag.Parse()
	var psk []byte
	if *pskHex != "" {
		var err error
		if psk, err = hex.DecodeString(*pskHex); err != nil || len(psk) < 16 {
			log.Fatal("-psk: want at least 16 bytes in hex")
		}
	}
	ctx := context.Background()
	var err error
	switch *mode {
	case "demo":
		err = demo(ctx, os.Stdout)
	case "server":
		if psk == nil {
			psk = newKey()
			fmt.Printf("clients need -psk %x\n", psk)
		}
		err = serve(ctx, *listen, psk, nil)
	case "client":
		if psk == nil {
			log.Fatal("-psk is required")
		}
		paths := flag.Args()
		if len(paths) == 0 {
			paths = []string{"/hello"}
		}
		err = fetch(ctx, os.Stdout, *remote, psk, paths)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func newKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// config requires FSP, so that each request travels on an FSP clone.
func config(psk []byte) *carrier.Config {
	cfg := &carrier.Config{Security: psi.Security{PSK: psk}}
	cfg.Policy.Stack("fsp", policy.Require)
	return cfg
}

// handler is ordinary net/http code.
func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s over an FSP clone\n", r.Host)
	})
	mux.HandleFunc("POST /count", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "received %d bytes\n", n)
	})
	return mux
}

// serve runs the handler on addr until ctx ends; ready, if set, gets the
// address once listening.
func serve(ctx context.Context, addr string, psk []byte, ready chan<- string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	l, err := carrier.Listen(ctx, post.Local{Addr: ap}, config(psk))
	if err != nil {
		return err
	}
	srv := &httpcarrier.Server{Handler: handler()}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if ready != nil {
		ready <- netip.AddrPortFrom(ap.Addr(), l.Addr().Port()).String()
	}
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// fetch GETs each path (POSTing 1 MB to /count) with a plain http.Client
// whose Transport is httpcarrier's.
func fetch(ctx context.Context, out io.Writer, origin string, psk []byte, paths []string) error {
	tr := &httpcarrier.Transport{Config: config(psk)}
	// Close the Carriers and wait for the server to have seen it, so the
	// process may exit.
	defer tr.CloseIdleConnectionsContext(ctx)
	client := &http.Client{Transport: tr}
	for _, p := range paths {
		url := "http://" + origin + p
		var resp *http.Response
		var err error
		if p == "/count" {
			resp, err = client.Post(url, "application/octet-stream", strings.NewReader(strings.Repeat("x", 1<<20)))
		} else {
			resp, err = client.Get(url)
		}
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s %s: %s", p, resp.Status, body)
	}
	return nil
}

// demo runs a server and a client in one process over loopback.
func demo(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	psk := newKey()
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, "127.0.0.1:0", psk, ready) }()
	select {
	case addr := <-ready:
		if err := fetch(ctx, out, addr, psk, []string{"/hello", "/count"}); err != nil {
			return err
		}
	case err := <-errc:
		return err
	}
	cancel()
	return <-errc
}
