package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func cmdRendezvous(ctx context.Context, args []string) error {
	o := newOptions("rendezvous")
	args, err := start(ctx, o, args, 1, "rendezvous [flags] [HOST]:PORT")
	if err != nil {
		return err
	}
	srv := rendezvous.NewServer(rendezvous.Config{})
	defer srv.Close()
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	// Bounded as examples/rendezvous is: before, a client could hold any
	// number of connections, idle or sending a body a byte at a time,
	// each forever.
	lim := httpcarrier.LimitListener(ln, rendezvous.DefaultMaxConnsPerSource, rendezvous.DefaultMaxConns)
	hs := srv.HTTPServer()
	hs.ConnState = lim.ConnState
	go func() { <-ctx.Done(); hs.Close() }()
	o.out.result(fmt.Sprintf("rendezvous server on http://%s", ln.Addr()), map[string]any{"event": "listening", "addr": ln.Addr().String()})
	if err := hs.Serve(lim); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func cmdP2P(ctx context.Context, args []string) error {
	o := newOptions("p2p")
	url := o.fs.String("rendezvous", "http://127.0.0.1:8080", "rendezvous server URL")
	keyFile := o.fs.String("keyfile", "", "this peer's key (PEM), created if missing; empty means a new key for this run")
	peer := o.fs.String("peer", "", "the other peer's ID")
	loopback := o.fs.Bool("loopback", false, "offer loopback addresses only (both peers on one host)")
	if _, err := start(ctx, o, args, 0, "p2p [flags] -rendezvous URL -peer ID"); err != nil {
		return err
	}
	key, err := loadKey(*keyFile, o.out)
	if err != nil {
		return err
	}
	o.out.note("this peer's ID (give it to the other side): %s", key.ID)
	o.out.event(map[string]any{"event": "id", "id": key.ID.String()})
	if *peer == "" {
		return usagef("-peer: the other peer's ID is needed")
	}
	pid, err := rendezvous.ParsePeerID(*peer)
	if err != nil {
		return usagef("-peer: %v", err)
	}
	cfg, err := o.config(false)
	if err != nil {
		return err
	}
	cfg.Security = psi.Security{Certificates: []tls.Certificate{key.Certificate}}
	cfg.Rendezvous = association.RendezvousConfig{IncludeLoopback: *loopback, IPv4Only: *loopback,
		Peers: map[string]rendezvous.PeerID{"peer": pid}}
	dctx, cancel := context.WithTimeout(ctx, max(o.timeout, 2*time.Minute))
	defer cancel()
	c, err := carrier.Initiate(dctx, post.Remote{Peer: "peer", Rendezvous: *url}, cfg)
	if err != nil {
		return err
	}
	o.track(c)
	o.out.connected("connected", c)
	return chat(ctx, c, os.Stdin, o.out)
}

// loadKey reads the key in file, creating the file with a new key if it
// does not exist; an empty name means a new key that is not saved.
func loadKey(file string, out *output) (*rendezvous.Key, error) {
	if file == "" {
		return rendezvous.GenerateKey()
	}
	data, err := os.ReadFile(file)
	if err == nil {
		return rendezvous.ParseKeyPEM(data)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key, err := rendezvous.GenerateKey()
	if err != nil {
		return nil, err
	}
	pemData, err := key.MarshalPEM()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, pemData, 0o600); err != nil {
		return nil, err
	}
	out.note("created a new key in %s", file)
	return key, nil
}
