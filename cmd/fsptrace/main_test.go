package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/internal/qlog"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp"
)

// recordTrace sends 1 MiB over a lossy FSP path with tracing on and
// returns the client's trace file.
func recordTrace(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	imp := netem.Config{Loss: 0.03, Delay: time.Millisecond, Seed: 21}
	spc, err := netem.Listen("udp4", "127.0.0.1:0", imp)
	if err != nil {
		t.Fatal(err)
	}
	imp.Seed++
	cpc, err := netem.Listen("udp4", "127.0.0.1:0", imp)
	if err != nil {
		t.Fatal(err)
	}
	st, ct := &fsp.Transport{Conn: spc}, &fsp.Transport{Conn: cpc}
	t.Cleanup(func() { ct.Close(); st.Close(); cpc.Close(); spc.Close() })
	sec := psi.Security{PSK: bytes.Repeat([]byte("k"), 32)}
	l, err := st.Listen(&fsp.Config{Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			got <- -1
			return
		}
		defer s.Close()
		n, buf := 0, make([]byte, 64<<10)
		for {
			k, _, err := s.ReadMessage(ctx, buf)
			n += k
			if err != nil {
				got <- n
				return
			}
		}
	}()
	c, err := ct.Dial(ctx, spc.LocalAddr().(*net.UDPAddr), &fsp.Config{Security: sec, TraceDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 64<<10)
	for range 16 {
		if err := c.SendMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CloseContext(ctx); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 16*len(msg) {
		t.Fatalf("received %d bytes", n)
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "fsp_client_*.sqlog"))
	if len(paths) != 1 {
		t.Fatalf("client traces: %v", paths)
	}
	return paths[0]
}

func TestChart(t *testing.T) {
	trace := recordTrace(t)
	var stderr bytes.Buffer
	if code := run([]string{trace}, nil, io.Discard, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	svg, err := os.ReadFile(strings.TrimSuffix(trace, ".sqlog") + ".svg")
	if err != nil {
		t.Fatal(err)
	}
	// Well-formed XML with an svg root, and the three panels.
	d := xml.NewDecoder(bytes.NewReader(svg))
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q", root)
	}
	for _, s := range []string{"sequence number", "Congestion window", "Round-trip time", "lost"} {
		if !bytes.Contains(svg, []byte(s)) {
			t.Errorf("chart lacks %q", s)
		}
	}
	t.Logf("%d bytes of SVG", len(svg))

	// A trace on standard input charts to standard output.
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	if code := run([]string{"-width", "6", "-height", "6", "-"}, f, &out, &stderr); code != 0 || !bytes.HasPrefix(out.Bytes(), []byte("<?xml")) {
		t.Fatalf("exit %d, %d bytes out: %s", code, out.Len(), stderr.String())
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.sqlog")
	os.WriteFile(bad, []byte("\x1e{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\n\x1e{oops\n"), 0o644)
	var stderr bytes.Buffer
	if code := run([]string{bad}, nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "malformed") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.svg")); err == nil {
		t.Fatal("a chart was written for a bad trace")
	}
	if code := run(nil, nil, io.Discard, &stderr); code != 2 {
		t.Fatalf("no arguments: exit %d", code)
	}
}

// FuzzParse feeds the chart's trace reader arbitrary input: it returns
// series or an error wrapping a post sentinel, and what it returns
// renders.
func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	w := qlog.NewWriter(nopCloser{&buf}, "fsp", "client", "1", fsp.TraceSchema, time.Unix(0, 0))
	w.Event(time.Unix(0, 1e6), "fsp:packet_sent", map[string]any{"seq": 1, "length": 100, "packet_type": "PURE_DATA"})
	w.Event(time.Unix(0, 2e6), "fsp:packet_lost", map[string]any{"seq": 1})
	w.Event(time.Unix(0, 3e6), "fsp:packet_sent", map[string]any{"seq": 1, "length": 100, "retransmission": true})
	w.Event(time.Unix(0, 4e6), "fsp:packets_acked", map[string]any{"expected": 2})
	w.Event(time.Unix(0, 5e6), "fsp:metrics_updated", map[string]any{"latest_rtt": 2.5, "smoothed_rtt": 2, "min_rtt": 1, "congestion_window": 40000})
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("\x1e{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\x1e{\"time\":-1e300,\"name\":\"fsp:packet_lost\",\"data\":{\"seq\":1e300}}"))
	f.Add([]byte("\x1e{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\x1e{\"time\":1,\"name\":\"fsp:metrics_updated\",\"data\":[]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parse(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) && !errors.Is(err, post.ErrInvalid) {
				t.Fatalf("error %v wraps no post sentinel", err)
			}
			return
		}
		if err := render(s, io.Discard, 300, 300); err != nil {
			t.Fatal(err)
		}
	})
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
