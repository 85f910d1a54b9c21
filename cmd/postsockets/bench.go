package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// pingSize bounds the messages a bench server echoes; larger ones are
// bulk data, counted and dropped.
const pingSize = 1024

func cmdBench(ctx context.Context, args []string) error {
	o := newOptions("bench")
	server := o.fs.Bool("l", false, "be the bench server on ADDR")
	dur := o.fs.Duration("t", 3*time.Second, "how long to send")
	size := o.fs.Int("size", 1<<20, "bytes per bulk message")
	pings := o.fs.Int("pings", 20, "round trips to time before the bulk transfer")
	if err := o.parse(args); err != nil {
		return err
	}
	if err := o.serveMetrics(ctx); err != nil {
		return err
	}
	if *server {
		if o.fs.NArg() != 1 {
			return usagef("usage: postsockets bench -l [flags] [HOST]:PORT")
		}
		l, err := o.listen(ctx, o.fs.Arg(0))
		if err != nil {
			return err
		}
		defer l.Close()
		return benchServe(ctx, o, l)
	}
	addr := ""
	switch o.fs.NArg() {
	case 0: // a server of our own on loopback, trusted by its pin
		so := *o
		so.out = newOutput(false)
		so.out.err, so.out.out = io.Discard, io.Discard
		so.json, so.metrics = false, ""
		cfg, err := so.config(true)
		if err != nil {
			return err
		}
		l, err := carrier.Listen(ctx, post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, cfg)
		if err != nil {
			return err
		}
		defer l.Close()
		go benchServe(ctx, &so, l)
		addr = l.Addr().String()
		if len(cfg.Security.Certificates) > 0 {
			o.pins = pinOf(cfg)
		}
	case 1:
		addr = o.fs.Arg(0)
	default:
		return usagef("usage: postsockets bench [flags] [HOST:PORT]")
	}
	c, err := o.dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Abort()
	// Round trips, timed by the application.
	var rtts []time.Duration
	ping := make([]byte, 32)
	for range *pings {
		t0 := time.Now()
		if err := c.Send(ctx, ping); err != nil {
			return err
		}
		if _, err := c.Receive(ctx); err != nil {
			return err
		}
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	// Bulk: messages of size for dur; Close confirms delivery.
	msg := make([]byte, max(*size, pingSize+1))
	var sent int64
	bar := o.out.progress(int64(dur.Seconds()*10), "bench")
	t0 := time.Now()
	for tick := 0; time.Since(t0) < *dur; {
		if err := c.Send(ctx, msg); err != nil {
			return err
		}
		sent += int64(len(msg))
		if d := int(time.Since(t0) / (100 * time.Millisecond)); d > tick {
			bar.Write(make([]byte, d-tick))
			tick = d
		}
	}
	st0 := c.Stats()
	if err := c.Close(); err != nil {
		return fmt.Errorf("the server did not confirm the data: %w", err)
	}
	el := time.Since(t0)
	res := o.out.stats(c, el)
	lossPct := 0.0
	if st0.PacketsSent > 0 {
		lossPct = 100 * float64(max(st0.PacketsLost, st0.Retransmissions)) / float64(st0.PacketsSent)
	}
	var p50, p99 time.Duration
	if len(rtts) > 0 {
		p50, p99 = rtts[len(rtts)/2], rtts[(len(rtts)*99)/100]
	}
	res["event"], res["bytes"], res["throughput_bps"] = "bench", sent, float64(sent)*8/el.Seconds()
	res["rtt_p50_ms"], res["rtt_p99_ms"], res["stack_rtt_ms"], res["loss_percent"] = ms(p50), ms(p99), ms(st0.SmoothedRTT), lossPct
	retx, retxText := retransmissions(st0)
	res["retransmissions"], res["packets_sent"], res["packets_lost"] = retx, st0.PacketsSent, st0.PacketsLost
	o.out.result(fmt.Sprintf("%-5s %s  %d bytes in %s  rtt p50 %s p99 %s (stack %s)  loss %.2f%% (%d lost, %s retransmissions, of %d packets)",
		st0.Stack, rate(sent, el), sent, el.Round(time.Millisecond), fmtDur(p50), fmtDur(p99), fmtDur(st0.SmoothedRTT),
		lossPct, st0.PacketsLost, retxText, st0.PacketsSent), res)
	return nil
}

// benchServe echoes small messages and drops bulk ones, for every
// Carrier l accepts.
func benchServe(ctx context.Context, o *options, l *carrier.Listener) error {
	for {
		c, err := o.accept(ctx, l)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, post.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			t0 := time.Now()
			buf := make([]byte, partSize)
			for {
				m, err := c.Ready(ctx, carrier.ReadyOptions{Max: partSize, Buffer: buf})
				if err != nil {
					if errors.Is(err, io.EOF) {
						st := c.Stats()
						o.out.result(fmt.Sprintf("%s from %s: %d bytes, %d messages in %s", st.Stack, st.Path.Remote, st.BytesReceived, st.MessagesReceived, time.Since(t0).Round(time.Millisecond)),
							o.out.stats(c, time.Since(t0)))
					}
					return
				}
				if m.End && m.Offset == 0 && len(m.Content) <= pingSize {
					c.Send(ctx, m.Content)
				}
			}
		}()
	}
}

// pinOf is the pin of cfg's own certificate.
func pinOf(cfg *carrier.Config) string {
	return psi.PinCertificate(cfg.Security.Certificates[0].Leaf).String()
}
