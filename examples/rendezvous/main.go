// Command rendezvous runs a rendezvous server for peer-to-peer
// connections: peers that name each other exchange their ICE candidates
// through it, then connect directly (see examples/p2p).
//
//	go run ./examples/rendezvous -listen :8080
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve HTTP on")
	ttl := flag.Duration("ttl", rendezvous.DefaultEntryTTL, "how long an unanswered registration lives")
	maxWait := flag.Duration("max-wait", rendezvous.DefaultMaxWait, "longest single long poll")
	verbose := flag.Bool("v", false, "log each match")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		os.Exit(1)
	}
	srv := &rendezvous.Server{EntryTTL: *ttl, MaxWait: *maxWait, Logger: log}
	if err := serve(ctx, ln, srv, log); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

// serve runs srv on ln until ctx ends.
func serve(ctx context.Context, ln net.Listener, srv *rendezvous.Server, log *slog.Logger) error {
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("rendezvous server listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	srv.Close() // release long polls so Shutdown need not wait for them
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
