package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/post"
)

// gateway is a running front or back.
type gateway struct {
	addr     string // where it listens
	shutdown func(ctx context.Context) error
	done     chan error // the serving loop's result
}

func start(ctx context.Context, o *options, log *slog.Logger) (*gateway, error) {
	sec, err := o.security()
	if err != nil {
		return nil, err
	}
	pol, err := o.policy()
	if err != nil {
		return nil, err
	}
	cfg := &carrier.Config{Security: sec, Policy: pol, Stacks: o.stacks, Logger: log}
	if o.mode == "front" {
		return startFront(ctx, o, cfg, log)
	}
	return startBack(ctx, o, cfg, log)
}

// startFront serves ordinary HTTP clients and forwards over Carriers.
func startFront(ctx context.Context, o *options, cfg *carrier.Config, log *slog.Logger) (*gateway, error) {
	if _, _, err := net.SplitHostPort(o.origin); err != nil {
		return nil, fmt.Errorf("-origin: want host:port of the postsockets origin: %w", err)
	}
	if cfg.Security.ServerName == "" {
		cfg.Security.ServerName, _, _ = net.SplitHostPort(o.origin)
	}
	tr := &httpcarrier.Transport{Config: cfg, Logger: log}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = o.origin
			if !o.preserveHost {
				pr.Out.Host = o.origin
			}
			addForwarded(pr.Out.Header, pr.In, o.trustForwarded)
			passTrailers(pr)
		},
		Transport:    tr,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: proxyError(log),
	}
	stopTunnels := make(chan struct{})
	srv := &http.Server{
		Handler:           o.requestLimitHandler(o.bodyTimeoutHandler(accessLog(log, withConnect(proxy, frontConnect(tr, o, stopTunnels, log))))),
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    o.maxHeader,
		IdleTimeout:       2 * time.Minute, // without it a keep-alive connection idles forever
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	srv.RegisterOnShutdown(sync.OnceFunc(func() { close(stopTunnels) }))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", o.listen)
	if err != nil {
		return nil, err
	}
	lim := httpcarrier.LimitListener(ln, o.connsPerAddr, o.conns)
	srv.ConnState = lim.ConnState
	ln = lim
	g := &gateway{addr: ln.Addr().String(), done: make(chan error, 1)}
	tlsOn := o.tlsCert != "" || o.tlsKey != ""
	go func() {
		var err error
		if tlsOn {
			err = srv.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			err = srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		g.done <- err
	}()
	g.shutdown = func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		// Close the roots to the back and wait: the process exits next,
		// and a root left open holds the back until its idle timeout.
		if cerr := tr.CloseIdleConnectionsContext(ctx); err == nil {
			err = cerr
		}
		return err
	}
	log.Info("front gateway", "listen", g.addr, "tls", tlsOn, "origin", o.origin, "stack", o.stack)
	return g, nil
}

// startBack serves HTTP over Carriers and forwards to an ordinary origin.
func startBack(ctx context.Context, o *options, cfg *carrier.Config, log *slog.Logger) (*gateway, error) {
	target, err := url.Parse(o.origin)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("-origin: want an http:// or https:// URL, got %q", o.origin)
	}
	local, err := parseLocal(o.listen)
	if err != nil {
		return nil, err
	}
	l, err := carrier.Listen(ctx, post.Local{Addr: local}, cfg)
	if err != nil {
		return nil, err
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			host := pr.In.Host
			pr.SetURL(target)
			if o.preserveHost {
				pr.Out.Host = host
			}
			addForwarded(pr.Out.Header, pr.In, true) // the front is authenticated
			passTrailers(pr)
		},
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: proxyError(log),
	}
	srv := &httpcarrier.Server{Handler: accessLog(log, withConnect(proxy, backConnect(newConnectPolicy(o.connect), o.tunnelIdle, log))), Logger: log}
	g := &gateway{addr: netip.AddrPortFrom(local.Addr(), l.Addr().Port()).String(), done: make(chan error, 1)}
	go func() {
		err := srv.Serve(l)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		g.done <- err
	}()
	g.shutdown = srv.Shutdown
	log.Info("back gateway", "listen", l.Addrs(), "origin", target.String(), "stack", o.stack)
	return g, nil
}

// parseLocal parses a listen address; an empty host means every address.
func parseLocal(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("-listen: %w", err)
	}
	if host == "" {
		host = "::"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("-listen: want an IP address and port: %w", err)
	}
	return ap, nil
}

// addForwarded appends this hop's element to the Forwarded header (RFC
// 7239): the client's address, the protocol and the host it asked for,
// after the elements of earlier hops if keepPrior.
func addForwarded(h http.Header, in *http.Request, keepPrior bool) {
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	elem := "for=" + forwardedNode(in.RemoteAddr) + ";proto=" + proto
	if in.Host != "" {
		elem += ";host=" + quoteForwarded(in.Host)
	}
	if prior := in.Header.Values("Forwarded"); keepPrior && len(prior) > 0 {
		elem = strings.Join(prior, ", ") + ", " + elem
	}
	h.Set("Forwarded", elem)
}

// forwardedNode formats an address as a Forwarded node: quoted, with
// IPv6 in brackets.
func forwardedNode(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return `"` + netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String() + `"`
	}
	if addr == "" {
		return "unknown"
	}
	return quoteForwarded(addr)
}

func quoteForwarded(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func proxyError(log *slog.Logger) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() != nil {
			log.Debug("client went away", "method", r.Method, "url", r.URL.String(), "err", err)
			return
		}
		log.Warn("origin failed", "method", r.Method, "url", r.URL.String(), "err", err)
		w.WriteHeader(http.StatusBadGateway)
	}
}

// accessLog logs each request at debug level.
func accessLog(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		log.Debug("request", "client", r.RemoteAddr, "proto", r.Proto, "method", r.Method, "uri", r.RequestURI, "took", time.Since(start))
	})
}

// passTrailers gives the outgoing request the incoming request's Trailer
// map itself: ReverseProxy copies it before the body is read, so the
// values the client sends after the body would never reach the origin.
// The server fills the map when the body ends, before the Transport
// sends the outgoing request's trailers.
func passTrailers(pr *httputil.ProxyRequest) {
	if pr.In.Trailer != nil {
		pr.Out.Trailer = pr.In.Trailer
	}
}
