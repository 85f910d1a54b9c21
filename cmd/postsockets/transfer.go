package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/post"
)

// partSize is how much of a message is read at once.
const partSize = 256 << 10

// start parses the flags and arguments (want of them) and starts the
// metrics exporter.
func start(ctx context.Context, o *options, args []string, want int, usage string) ([]string, error) {
	if err := o.parse(args); err != nil {
		return nil, err
	}
	if o.fs.NArg() != want {
		return nil, usagef("usage: postsockets %s", usage)
	}
	if err := o.serveMetrics(ctx); err != nil {
		return nil, err
	}
	return o.fs.Args(), nil
}

// listen starts a Listener on addr and reports where it listens.
func (o *options) listen(ctx context.Context, addr string) (*carrier.Listener, error) {
	local, err := listenAddr(addr)
	if err != nil {
		return nil, err
	}
	cfg, err := o.config(true)
	if err != nil {
		return nil, err
	}
	l, err := carrier.Listen(ctx, local, cfg)
	if err != nil {
		return nil, err
	}
	addrs := map[string]string{}
	for s, a := range l.Addrs() {
		addrs[s] = a.String()
	}
	o.out.event(map[string]any{"event": "listening", "addr": l.Addr().String(), "port": l.Addr().Port(), "stacks": addrs})
	if !o.json {
		o.out.note("listening on %s %v", l.Addr(), addrs)
	}
	return l, nil
}

// dial initiates a Carrier to addr and reports the winner.
func (o *options) dial(ctx context.Context, addr string) (*carrier.Carrier, error) {
	remote, err := remoteOf(addr)
	if err != nil {
		return nil, err
	}
	cfg, err := o.config(false)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err := carrier.Initiate(dctx, remote, cfg)
	if err != nil {
		return nil, err
	}
	o.track(c)
	o.out.connected("connected", c)
	return c, nil
}

func (o *options) accept(ctx context.Context, l *carrier.Listener) (*carrier.Carrier, error) {
	c, err := l.Accept(ctx)
	if err != nil {
		return nil, err
	}
	o.track(c)
	o.out.connected("accepted", c)
	return c, nil
}

// acceptOne accepts the one peer of recv and cat -l and then closes l:
// left open, it took the connections of anyone else who dialled, up to
// the stacks' bounds, and held them and what they sent until the
// command ended.
func (o *options) acceptOne(ctx context.Context, l *carrier.Listener) (*carrier.Carrier, error) {
	c, err := l.Accept(ctx)
	l.Close()
	if err != nil {
		return nil, err
	}
	o.track(c)
	o.out.connected("accepted", c)
	return c, nil
}

func cmdSend(ctx context.Context, args []string) error {
	o := newOptions("send")
	args, err := start(ctx, o, args, 2, "send [flags] HOST:PORT FILE|-")
	if err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	size := int64(-1)
	if args[1] != "-" {
		f, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		in = f
	}
	c, err := o.dial(ctx, args[0])
	if err != nil {
		return err
	}
	defer c.Abort()
	t0 := time.Now()
	w, err := c.NewMessageWriter(ctx, post.Properties{})
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(w, h, o.out.progress(size, "sending")), in, make([]byte, partSize))
	if err != nil {
		w.Abort()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := c.Close(); err != nil { // returns once the peer has it all
		return fmt.Errorf("the peer did not confirm the file: %w", err)
	}
	el := time.Since(t0)
	sum := hex.EncodeToString(h.Sum(nil))
	res := o.out.stats(c, el)
	res["event"], res["sha256"], res["bytes"] = "sent", sum, n
	o.out.result(fmt.Sprintf("sent %d bytes in %s (%s) sha256 %s", n, el.Round(time.Millisecond), rate(n, el), sum), res)
	return nil
}

func cmdRecv(ctx context.Context, args []string) error {
	o := newOptions("recv")
	file := o.fs.String("o", "-", "where to write the file; - is stdout")
	args, err := start(ctx, o, args, 1, "recv [flags] [HOST]:PORT")
	if err != nil {
		return err
	}
	if o.json && *file == "-" {
		return usagef("-json writes to stdout: name a file with -o")
	}
	l, err := o.listen(ctx, args[0])
	if err != nil {
		return err
	}
	c, err := o.acceptOne(ctx, l)
	if err != nil {
		return err
	}
	defer c.Close()
	var out io.Writer = os.Stdout
	if *file != "-" {
		f, err := os.Create(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	bw := bufio.NewWriterSize(out, partSize)
	h := sha256.New()
	bar := o.out.progress(-1, "receiving")
	t0 := time.Now()
	var n int64
	var m *post.Message
	buf := make([]byte, partSize)
	for m == nil || !m.End {
		if m, err = c.Ready(ctx, carrier.ReadyOptions{Max: partSize, Buffer: buf}); err != nil {
			return fmt.Errorf("after %d bytes: %w", n, err)
		}
		bw.Write(m.Content)
		h.Write(m.Content)
		bar.Write(m.Content)
		n += int64(len(m.Content))
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	el := time.Since(t0)
	sum := hex.EncodeToString(h.Sum(nil))
	res := o.out.stats(c, el)
	res["event"], res["sha256"], res["bytes"], res["from"], res["peer"], res["early"] = "received", sum, n, m.From.String(), m.Peer, m.Early
	text := fmt.Sprintf("received %d bytes from %s in %s (%s) sha256 %s", n, m.From, el.Round(time.Millisecond), rate(n, el), sum)
	if *file == "-" {
		o.out.note("%s", text)
	} else {
		o.out.result(text, res)
	}
	// Wait for the sender's close, so its Close is confirmed.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c.Receive(wctx)
	return nil
}

func cmdListen(ctx context.Context, args []string) error {
	o := newOptions("listen")
	echo := o.fs.Bool("echo", false, "send every message back")
	args, err := start(ctx, o, args, 1, "listen [flags] [HOST]:PORT")
	if err != nil {
		return err
	}
	l, err := o.listen(ctx, args[0])
	if err != nil {
		return err
	}
	defer l.Close()
	for {
		c, err := o.accept(ctx, l)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			for {
				m, err := c.Receive(ctx)
				if err != nil {
					if !errors.Is(err, io.EOF) {
						o.out.note("%s: %v", c.Path().Remote, err)
					}
					return
				}
				o.out.result(fmt.Sprintf("%s fork %d%s peer %q: %d bytes: %.60q", m.From, m.Fork, early(m), m.Peer, len(m.Content), m.Content),
					map[string]any{"event": "message", "from": m.From.String(), "fork": m.Fork, "early": m.Early, "peer": m.Peer, "bytes": len(m.Content), "content": string(m.Content)})
				if *echo {
					c.Send(ctx, m.Content)
				}
			}
		}()
	}
}

func early(m *post.Message) string {
	if m.Early {
		return " 0-rtt"
	}
	return ""
}

func cmdCat(ctx context.Context, args []string) error {
	o := newOptions("cat")
	lst := o.fs.Bool("l", false, "listen for one peer instead of connecting")
	args, err := start(ctx, o, args, 1, "cat [flags] [-l] HOST:PORT")
	if err != nil {
		return err
	}
	var c *carrier.Carrier
	if *lst {
		l, err := o.listen(ctx, args[0])
		if err != nil {
			return err
		}
		if c, err = o.acceptOne(ctx, l); err != nil {
			return err
		}
	} else if c, err = o.dial(ctx, args[0]); err != nil {
		return err
	}
	return chat(ctx, c, os.Stdin, o.out)
}

// chat sends each line of in as a message and prints each message
// received, until in ends, the peer closes or ctx ends. It closes c.
// Input that ends before its first line (< /dev/null) sends nothing and
// hangs up on nothing: chat then only receives, until the peer closes
// or ctx ends, since a Close would drop what the peer still sends.
func chat(ctx context.Context, c *carrier.Carrier, in io.Reader, o *output) error {
	errc := make(chan error, 2)
	go func() {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				errc <- err
				return
			}
			o.result(string(m.Content), map[string]any{"event": "message", "from": m.From.String(), "content": string(m.Content)})
		}
	}()
	go func() {
		sc := bufio.NewScanner(in)
		sent := false
		for sc.Scan() {
			if err := c.Send(ctx, append([]byte(nil), sc.Bytes()...)); err != nil {
				errc <- err
				return
			}
			sent = true
		}
		if err := sc.Err(); err != nil || sent {
			errc <- err // nil at the end of input: close
		}
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	cerr := c.Close()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, post.ErrClosed) && ctx.Err() == nil {
		return err
	}
	if ctx.Err() == nil && cerr != nil {
		return cerr
	}
	return nil
}
