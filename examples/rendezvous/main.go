// Command rendezvous runs a rendezvous server for peer-to-peer
// connections: peers that name each other by peer ID exchange their ICE
// candidates through it, then connect directly (see examples/p2p). Each
// peer proves its key on every request; the server bounds what each
// client may hold and the connections of each address and in all, and
// cuts slow or idle connections (rendezvous.Server.HTTPServer).
//
//	go run ./examples/rendezvous -listen :8080
//	go run ./examples/rendezvous -listen :8443 -cert cert.pem -key key.pem
//
// Over plain HTTP anyone on the path sees the peers' ICE offers; serve
// HTTPS (-cert, -key) where that matters. The peers' keys protect their
// connection either way.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/httpcarrier"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve HTTP on")
	ttl := flag.Duration("ttl", rendezvous.DefaultEntryTTL, "how long a registration outlives a poll that ended unanswered")
	maxWait := flag.Duration("max-wait", rendezvous.DefaultMaxWait, "longest single long poll")
	perSource := flag.Int("max-per-source", rendezvous.DefaultMaxPerSource, "registrations per client address")
	perKey := flag.Int("max-per-key", rendezvous.DefaultMaxPerKey, "registrations per peer ID")
	conns := flag.Int("max-conns-per-source", rendezvous.DefaultMaxConnsPerSource, "open connections per client address (an IPv6 /64 counts as one); 0 means no limit")
	total := flag.Int("max-conns", rendezvous.DefaultMaxConns, "open connections in all; when full, a newcomer from a quieter address replaces an idle connection of the busiest; 0 means no limit")
	certFile := flag.String("cert", "", "TLS certificate chain (PEM) to serve HTTPS")
	keyFile := flag.String("key", "", "TLS private key (PEM) for -cert")
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
	srv := rendezvous.NewServer(rendezvous.Config{
		EntryTTL: *ttl, MaxWait: *maxWait,
		MaxPerSource: *perSource, MaxPerKey: *perKey,
		Logger: log,
	})
	if (*certFile == "") != (*keyFile == "") {
		log.Error("-cert and -key go together")
		os.Exit(2)
	}
	lim := httpcarrier.LimitListener(ln, *conns, *total) // an IPv6 /64 is one source
	var l net.Listener = lim
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Error("tls", "err", err)
			os.Exit(1)
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if err := serve(ctx, l, srv, lim.ConnState, log); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

// serve runs srv on ln until ctx ends.
// connState, if set, is the listener's (httpcarrier.ConnLimiter).
func serve(ctx context.Context, ln net.Listener, srv *rendezvous.Server, connState func(net.Conn, http.ConnState), log *slog.Logger) error {
	hs := srv.HTTPServer()
	hs.ConnState = connState
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
