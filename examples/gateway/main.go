// Command gateway puts an ordinary web server behind FSP, built from the
// library's parts: a back gateway (httpcarrier.Server in front of an
// httputil.ReverseProxy to the web server) and a front gateway (an
// ordinary http.Server whose ReverseProxy has httpcarrier.Transport as
// its Transport). Unmodified clients talk to the front, the unmodified
// server hears from the back, and every request crosses on an FSP clone
// of its own. cmd/psgateway is the full program (HTTP/2, TLS, CONNECT,
// Forwarded, config files); this is the smallest working shape of it,
// with the same bounds on the front's clients: header, body and keep-alive
// timeouts, request heads of at most 64 KiB, at most -max-conns connections, -max-conns-per-addr from
// one address (httpcarrier.LimitListener), and 64 requests in progress
// from one address, 128 from one /24 or /48 (httpcarrier.RequestLimit),
// which the Transport then shares the back's slots between.
//
//	go run ./examples/gateway          # origin, back, front and a client in one process
//	go run ./examples/gateway -mode back -listen 127.0.0.1:4433 -origin http://127.0.0.1:8081
//	go run ./examples/gateway -mode front -listen 127.0.0.1:8080 -origin 127.0.0.1:4433 -psk <hex>
//	curl http://127.0.0.1:8080/
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
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func main() {
	mode := flag.String("mode", "demo", "demo, back or front")
	listen := flag.String("listen", "", "address to listen on")
	origin := flag.String("origin", "", "back: the web server's URL; front: the back's host:port")
	pskHex := flag.String("psk", "", "pre-shared key in hex shared by both gateways (the back makes one up if empty)")
	maxConns := flag.Int("max-conns", httpcarrier.DefaultMaxConns, "front: open connections in all; 0 means no limit")
	maxPerAddr := flag.Int("max-conns-per-addr", httpcarrier.DefaultMaxConnsPerAddr, "front: open connections from one address; 0 means no limit")
	flag.Parse()
	ctx := context.Background()
	var psk []byte
	if *pskHex != "" {
		var err error
		if psk, err = hex.DecodeString(*pskHex); err != nil || len(psk) < 16 {
			log.Fatal("-psk: want at least 16 bytes in hex")
		}
	}
	var err error
	switch *mode {
	case "demo":
		err = demo(ctx, os.Stdout)
	case "back":
		if psk == nil {
			psk = make([]byte, 32)
			rand.Read(psk)
			fmt.Printf("front needs -psk %x\n", psk)
		}
		var addr string
		var stop func()
		if addr, stop, err = back(ctx, *listen, *origin, psk); err == nil {
			fmt.Println("back gateway on", addr)
			defer stop()
			select {}
		}
	case "front":
		if psk == nil {
			log.Fatal("-psk is required")
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp", *listen); err == nil {
			srv, lim := frontServer(front(*origin, psk), ln, *maxPerAddr, *maxConns)
			err = srv.Serve(lim)
		}
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// config requires FSP and authenticates both gateways by the key.
func config(psk []byte) *carrier.Config {
	cfg := &carrier.Config{Security: psi.Security{PSK: psk}}
	cfg.Policy.Stack("fsp", policy.Require)
	return cfg
}

// back listens for HTTP over FSP clones on listen and forwards each
// request to the web server at origin. It returns the address and a
// function that stops it.
func back(ctx context.Context, listen, origin string, psk []byte) (string, func(), error) {
	target, err := url.Parse(origin)
	if err != nil || target.Host == "" {
		return "", nil, fmt.Errorf("-origin: want the web server's URL, got %q", origin)
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return "", nil, fmt.Errorf("-listen: %w", err)
	}
	l, err := carrier.Listen(ctx, post.Local{Addr: ap}, config(psk))
	if err != nil {
		return "", nil, err
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.SetXForwarded()
		pr.Out.Trailer = pr.In.Trailer // ReverseProxy's copy would miss the values sent after the body
	}}
	srv := &httpcarrier.Server{Handler: proxy}
	go srv.Serve(l)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
	return netip.AddrPortFrom(ap.Addr(), l.Addr().Port()).String(), stop, nil
}

// front is an ordinary http.Handler that forwards each request over its
// own FSP clone to the back gateway at origin (host:port).
func front(origin string, psk []byte) http.Handler {
	host, _, _ := net.SplitHostPort(origin)
	cfg := config(psk)
	cfg.Security.ServerName = host
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", origin
			pr.SetXForwarded()
			pr.Out.Trailer = pr.In.Trailer // as at the back
		},
		Transport: &httpcarrier.Transport{Config: cfg},
	}
}

// frontServer returns an http.Server for h and ln wrapped to hold at
// most total connections and perAddr from one client address (<= 0: no
// limit; httpcarrier.ConnLimiter), to serve with srv.Serve(lim). A client
// must send its request head within 30 s, its request body within 30 s
// plus 1 s per 512 bytes (httpcarrier.BodyTimeout's defaults), take each
// write of a response within 30 s (httpcarrier.WriteTimeout), one
// address has at most 64 requests in progress and one /24 or /48 at most
// 128 (httpcarrier.RequestLimit), a request head is at most 64 KiB
// (httpcarrier.DefaultFrontHeaderBytes), and a keep-alive connection
// idles at most 2 minutes, as at cmd/psgateway's front.
func frontServer(h http.Handler, ln net.Listener, perAddr, total int) (srv *http.Server, lim net.Listener) {
	l := httpcarrier.LimitListener(ln, perAddr, total)
	h = &httpcarrier.RequestLimit{Handler: &httpcarrier.BodyTimeout{Handler: &httpcarrier.WriteTimeout{Handler: h}}}
	return &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: httpcarrier.DefaultFrontHeaderBytes,
		IdleTimeout: 2 * time.Minute, ConnState: l.ConnState}, l
}

// demo runs a web server, both gateways and an ordinary client in one
// process over loopback.
func demo(ctx context.Context, out io.Writer) error {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from an unmodified web server: %s %s, forwarded for %s\n", r.Method, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	defer web.Close()
	psk := make([]byte, 32)
	rand.Read(psk)
	addr, stop, err := back(ctx, "127.0.0.1:0", web.URL, psk)
	if err != nil {
		return err
	}
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fe, lim := frontServer(front(addr, psk), ln, httpcarrier.DefaultMaxConnsPerAddr, httpcarrier.DefaultMaxConns)
	go fe.Serve(lim)
	defer fe.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for _, p := range []string{"/", "/index.html"} {
		resp, err := client.Get("http://" + ln.Addr().String() + p)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		fmt.Fprintf(out, "GET %s: %s", p, body)
	}
	return nil
}
