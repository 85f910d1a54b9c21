package carrier_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
)

// silentPeer returns a remote whose UDP port reads and never answers and
// whose TCP port completes TLS and then never answers: every stack's
// dial there waits until its context ends.
func silentPeer(t *testing.T) post.Remote {
	t.Helper()
	udp, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{certs.Leaf}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c) // until the dialer hangs up
			}()
		}
	}()
	return post.Remote{
		Name:       udp.LocalAddr().String(),
		ServerName: "localhost",
		Ports:      map[string]uint16{"tcp": ln.Addr().(*net.TCPAddr).AddrPort().Port()},
	}
}

// TestInitiateContextEnds: an Initiate whose caller cancels its context
// fails with an error wrapping context.Canceled and not post.ErrTimeout
// (OpError.Timeout is false), on every stack and in a race of all three;
// one whose deadline passes wraps post.ErrTimeout and
// context.DeadlineExceeded. A cancelled race wrapped ErrTimeout too.
func TestInitiateContextEnds(t *testing.T) {
	remote := silentPeer(t)
	for _, stack := range append([]string{"race"}, benchStacks...) {
		t.Run(stack, func(t *testing.T) {
			cfg := clientConfig()
			cfg.Policy.AttemptDelay = 10 * time.Millisecond // the race starts every attempt
			if stack != "race" {
				cfg.Policy.Stack(stack, policy.Require)
			}
			ctx, cancel := context.WithCancel(ctxT(t))
			time.AfterFunc(100*time.Millisecond, cancel)
			c, err := carrier.Initiate(ctx, remote, cfg)
			if err == nil {
				c.Close()
				t.Fatal("initiated a Carrier to a silent peer")
			}
			var op *post.OpError
			if !errors.Is(err, context.Canceled) || errors.Is(err, post.ErrTimeout) || !errors.As(err, &op) || op.Timeout() {
				t.Errorf("cancelled: %v; want context.Canceled, no post.ErrTimeout", err)
			}
			ctx, cancel = context.WithTimeout(ctxT(t), 100*time.Millisecond)
			defer cancel()
			c, err = carrier.Initiate(ctx, remote, cfg)
			if err == nil {
				c.Close()
				t.Fatal("initiated a Carrier to a silent peer")
			}
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, post.ErrTimeout) {
				t.Errorf("past its deadline: %v; want context.DeadlineExceeded and post.ErrTimeout", err)
			}
		})
	}
}
