package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/post"
)

// Upgrade requests (WebSocket and the like) pass through both gateways
// with httputil.ReverseProxy, which switches when the origin answers 101.
// CONNECT is handled here: the front forwards it over its own fork, and
// the back opens the TCP connection, for the targets -connect allows.

const connectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// withConnect sends CONNECT requests to connect and the others to h.
func withConnect(h, connect http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			connect.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// frontConnect forwards a client's CONNECT to the back over a fork of its
// own and splices the client's connection (HTTP/1.1) or stream (HTTP/2)
// to the fork once the back has connected.
// A tunnel also ends when done is closed (the front's Shutdown, which
// does not close hijacked connections).
func frontConnect(tr http.RoundTripper, o *options, done <-chan struct{}, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// net/http cancels r's context when the client half-closes a
		// hijacked connection; the tunnel outlives that, and ends with
		// the splice instead.
		ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
		defer cancel()
		stop := context.AfterFunc(r.Context(), cancel)
		out := (&http.Request{
			Method: http.MethodConnect,
			URL:    &url.URL{Scheme: "http", Host: o.origin},
			Host:   r.Host,
			Header: http.Header{},
		}).WithContext(ctx)
		addForwarded(out.Header, r, o.trustForwarded)
		resp, err := tr.RoundTrip(out)
		if !stop() && err == nil {
			err = r.Context().Err() // the client went away meanwhile
			resp.Body.Close()
		}
		if err != nil {
			proxyError(log)(w, r, err)
			return
		}
		back, ok := resp.Body.(io.ReadWriteCloser)
		if resp.StatusCode/100 != 2 || !ok {
			for k, vs := range resp.Header {
				w.Header()[k] = vs
			}
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
			resp.Body.Close()
			return
		}
		defer back.Close()
		if err := spliceClient(w, r, back, o.tunnelIdle, done); err != nil {
			log.Debug("connect tunnel ended", "target", r.Host, "err", err)
		}
	})
}

// spliceClient answers the client's CONNECT with 200 and copies between
// it and back until both directions ended or one failed.
func spliceClient(w http.ResponseWriter, r *http.Request, back io.ReadWriteCloser, idle time.Duration, done <-chan struct{}) error {
	rc := http.NewResponseController(w)
	if r.ProtoMajor >= 2 {
		// HTTP/2: the request body and the response are the stream.
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return err
		}
		return splice(r.Body, flushWriter{w, rc}, back, back, idle, done, func() {
			back.Close()
			now := time.Now()
			rc.SetReadDeadline(now)
			rc.SetWriteDeadline(now)
		})
	}
	conn, brw, err := rc.Hijack()
	if err != nil {
		http.Error(w, "cannot take the connection", http.StatusInternalServerError)
		return err
	}
	defer conn.Close()
	brw.WriteString(connectEstablished)
	if err := brw.Flush(); err != nil {
		return err
	}
	return splice(brw.Reader, conn, back, back, idle, done, func() { conn.Close(); back.Close() })
}

type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// backConnect connects a CONNECT from the front to its target over TCP,
// if allowed says so, and splices the fork to it until the tunnel has
// been idle for idle (0: no limit).
func backConnect(policy *connectPolicy, idle time.Duration, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.Host
		if !policy.allows(target) {
			log.Debug("CONNECT refused", "target", target, "client", r.RemoteAddr)
			http.Error(w, "CONNECT to this target is not allowed", http.StatusForbidden)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		c, err := policy.dialer(target).DialContext(ctx, "tcp", target)
		cancel()
		if errors.Is(err, errConnectAddr) {
			log.Debug("CONNECT refused", "target", target, "client", r.RemoteAddr, "err", err)
			http.Error(w, "CONNECT to this target is not allowed", http.StatusForbidden)
			return
		}
		if err != nil {
			log.Warn("CONNECT target unreachable", "target", target, "err", err)
			http.Error(w, "cannot reach the target", http.StatusBadGateway)
			return
		}
		defer c.Close()
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, "cannot take the stream", http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		brw.WriteString(connectEstablished)
		if err := brw.Flush(); err != nil {
			return
		}
		if err := splice(brw.Reader, conn, c, c, idle, nil, func() { conn.Close(); c.Close() }); err != nil {
			log.Debug("connect tunnel ended", "target", target, "err", err)
		}
	})
}

// splice copies aR to bW and bR to aW. A direction that reaches its end
// is passed on with CloseWrite where the writer has it; splice returns
// when both have ended or one failed, or when no byte has moved either
// way for idle (if > 0): a tunnel is a hijacked connection the HTTP
// server no longer times; or when done is closed. Returning early it
// calls stop, which must end
// the copies (close both sides, or set their deadlines), and waits until
// nothing writes to aW any more: aW may be an HTTP/2 ResponseWriter,
// which must not be used once the handler returned.
func splice(aR io.Reader, aW io.Writer, bR io.Reader, bW io.Writer, idle time.Duration, done <-chan struct{}, stop func()) error {
	toB, toA := make(chan error, 1), make(chan error, 1)
	var last atomic.Int64 // UnixNano of the latest bytes read either way
	last.Store(time.Now().UnixNano())
	one := func(dst io.Writer, src io.Reader, errc chan<- error) {
		_, err := io.Copy(dst, activity{src, &last})
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			err = cw.CloseWrite()
		}
		errc <- err
	}
	go one(bW, aR, toB)
	go one(aW, bR, toA)
	var tick <-chan time.Time
	if idle > 0 {
		t := time.NewTicker(max(idle/4, 10*time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	wait := toA // nil once the copy to aW has ended
	defer func() {
		if toB != nil || wait != nil {
			stop()
		}
		if wait != nil {
			<-wait
		}
	}()
	for toB != nil || wait != nil {
		select {
		case err := <-toB:
			toB = nil
			if err != nil {
				return err
			}
		case err := <-wait:
			wait = nil
			if err != nil {
				return err
			}
		case now := <-tick:
			if now.Sub(time.Unix(0, last.Load())) >= idle {
				return errTunnelIdle
			}
		case <-done:
			return errShutdown
		}
	}
	return nil
}

// errShutdown ends a tunnel when its gateway shuts down.
var errShutdown = post.Errorf(post.ErrClosed, "psgateway: shutting down")

// errTunnelIdle ends a tunnel through which nothing moved for its idle
// timeout.
var errTunnelIdle = post.Errorf(post.ErrTimeout, "psgateway: tunnel idle")

// activity notes when its reader last returned bytes.
type activity struct {
	r    io.Reader
	last *atomic.Int64
}

func (a activity) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.last.Store(time.Now().UnixNano())
	}
	return n, err
}
