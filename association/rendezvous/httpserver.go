package rendezvous

import (
	"net/http"
	"time"
)

// Bounds of the connections a rendezvous server's listener holds, for
// httpcarrier.LimitListener (which this package cannot import): one
// client address (an IPv6 /64) holds at most DefaultMaxConnsPerSource,
// all of them at most DefaultMaxConns.
const (
	DefaultMaxConnsPerSource = 64
	DefaultMaxConns          = 4096
)

// Timeouts of HTTPServer. A request's head and body must arrive within
// httpReadTimeout; ServeHTTP lifts that deadline for the long poll once
// it has the body, and bounds the answer's write itself.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpIdleTimeout       = 60 * time.Second
	httpMaxHeaderBytes    = 8 << 10
)

// HTTPServer returns an http.Server for s with the bounds a rendezvous
// server open to anyone needs: a request head of at most 8 KiB within 5
// s, head and body within 10 s, keep-alive connections idle at most 60
// s, an answer written within the long poll's MaxWait and 20 s. Without
// them (an http.Server's zero values) a client sending its body a byte
// at a time, or idling between requests, holds its connection forever.
// Serve it on a listener bounded per source and in all
// (httpcarrier.LimitListener with DefaultMaxConnsPerSource and
// DefaultMaxConns, its ConnState set as the server's).
func (s *Server) HTTPServer() *http.Server {
	s.init()
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpReadTimeout + s.cfg.MaxWait + 10*time.Second,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
	}
}
