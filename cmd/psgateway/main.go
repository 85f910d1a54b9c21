// Command psgateway connects ordinary HTTP software to HTTP over FSP
// clones, both ways.
//
// A front gateway accepts HTTP/1.1 and HTTP/2 (over TLS, or h2c with prior
// knowledge) from any client and forwards each request over its own FSP
// clone to a postsockets HTTP origin, such as a back gateway:
//
//	psgateway -mode front -listen 127.0.0.1:8080 -origin gw.example:4433 -psk-file psk.hex
//
// A back gateway accepts HTTP over FSP clones and forwards to an ordinary
// HTTP origin:
//
//	psgateway -mode back -listen :4433 -origin http://127.0.0.1:8081 -psk-file psk.hex
//
// Each gateway adds the address it received the request from to the
// Forwarded header (RFC 7239). There is no built-in secret: the two ends
// trust each other by a pre-shared key (-psk-file) or certificates
// (-cert, -key, -ca, -pins): each gateway presents its own certificate and
// checks the other's, the back refusing a front that presents none.
//
// The front bounds its clients: at most -max-conns connections (4,096)
// and -max-conns-per-addr (256) from one address, an IPv6 /64 counting
// as one, CONNECT tunnels included; when full, a newcomer from a quieter
// address replaces an idle keep-alive connection of the busiest
// (httpcarrier.LimitListener). One address has at most 64 requests in
// progress and one /24 or /48 at most 128 (httpcarrier.RequestLimit), and
// the back's 256 request slots a root are shared between prefixes, one
// holding many waiting at the front while one holding few is served
// (httpcarrier.Transport). Request heads must arrive within 30 s and be
// at most -max-header-bytes (64 KiB), each write of a response must
// complete within -write-timeout (30 s; a client that stops reading is
// cut), and keep-alive connections idle at most 2 minutes; a CONNECT
// tunnel closes, at both gateways, once no byte moved for
// -tunnel-idle-timeout (10 min).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

// run starts the gateway and serves until ctx ends, then shuts down
// gracefully (at most 10 s).
func run(ctx context.Context, args []string, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "psgateway:", err)
		return 2
	}
	log, err := o.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "psgateway:", err)
		return 2
	}
	g, err := start(ctx, o, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	select {
	case err := <-g.done:
		log.Error("gateway stopped", "err", err)
		return 1
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	return 0
}
