package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bin is the tool, built once into a temporary directory.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "postsockets-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "postsockets")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// jsonLines reads JSON objects from r into a channel.
func jsonLines(t *testing.T, r io.Reader) <-chan map[string]any {
	ch := make(chan map[string]any, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var v map[string]any
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				t.Errorf("not JSON: %q: %v", sc.Text(), err)
				continue
			}
			ch <- v
		}
	}()
	return ch
}

// next returns the next JSON object whose event is ev.
func next(t *testing.T, ch <-chan map[string]any, ev string) map[string]any {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before a %q event", ev)
			}
			if v["event"] == ev {
				return v
			}
		case <-timeout:
			t.Fatalf("no %q event", ev)
		}
	}
}

func TestSendRecv50MB(t *testing.T) {
	size := 50 << 20
	if testing.Short() {
		size = 4 << 20
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	for _, stack := range []string{"fsp", "quic", "tcp", ""} {
		name := stack
		if name == "" {
			name = "race"
		}
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t, 2*time.Minute)
			dst := filepath.Join(dir, "dst-"+name)
			args := []string{"recv", "-json", "-o", dst}
			if stack != "" {
				args = append(args, "-stack", stack)
			}
			recv := exec.CommandContext(ctx, bin, append(args, "127.0.0.1:0")...)
			rout, _ := recv.StdoutPipe()
			var rerr bytes.Buffer
			recv.Stderr = &rerr
			if err := recv.Start(); err != nil {
				t.Fatal(err)
			}
			lines := jsonLines(t, rout)
			pin := next(t, lines, "pin")["pin"].(string)
			addr := next(t, lines, "listening")["addr"].(string)
			sargs := []string{"send", "-json", "-pin", pin}
			if stack != "" {
				sargs = append(sargs, "-stack", stack)
			}
			send := exec.CommandContext(ctx, bin, append(sargs, addr, src)...)
			sout, err := send.Output()
			if err != nil {
				var serr []byte
				if ee, ok := err.(*exec.ExitError); ok {
					serr = ee.Stderr
				}
				t.Fatalf("send: %v\n%s\nsend stderr: %s\nrecv stderr: %s", err, sout, serr, rerr.String())
			}
			var sres map[string]any
			for _, l := range strings.Split(strings.TrimSpace(string(sout)), "\n") {
				var v map[string]any
				if err := json.Unmarshal([]byte(l), &v); err != nil {
					t.Fatalf("send -json printed %q: %v", l, err)
				}
				if v["event"] == "sent" {
					sres = v
				}
			}
			if sres["sha256"] != want || (stack != "" && sres["stack"] != stack) {
				t.Fatalf("send reported %v", sres)
			}
			rres := next(t, lines, "received")
			if rres["sha256"] != want || rres["bytes"].(float64) != float64(size) {
				t.Fatalf("recv reported %v", rres)
			}
			if err := recv.Wait(); err != nil {
				t.Fatalf("recv: %v\n%s", err, rerr.String())
			}
			got, err := os.ReadFile(dst)
			if err != nil || sha256.Sum256(got) != sum {
				t.Fatalf("the received file differs (%v)", err)
			}
			t.Logf("%s: %v s", name, sres["seconds"])
		})
	}
}

func TestBench(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	for _, stack := range []string{"fsp", "quic", "race"} {
		args := []string{"bench", "-t", "300ms", "-pings", "5"}
		if stack != "race" {
			args = append(args, "-stack", stack)
		}
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", stack, err, out)
		}
		s := string(out)
		for _, w := range []string{"bit/s", "rtt p50", "loss", "connected over"} {
			if !strings.Contains(s, w) {
				t.Fatalf("%s: bench printed no %q:\n%s", stack, w, s)
			}
		}
		if stack == "fsp" && !strings.Contains(s, "over fsp") {
			t.Fatalf("bench -stack fsp:\n%s", s)
		}
		// The connected line names the address the client sends from,
		// not the socket's unspecified one; quic-go does not count
		// retransmissions, and the tool says so rather than print 0.
		if strings.Contains(s, "0.0.0.0") || strings.Contains(s, "[::]") {
			t.Fatalf("%s: an unspecified address printed:\n%s", stack, s)
		}
		if stack == "quic" && !strings.Contains(s, "n/a retransmissions") {
			t.Fatalf("bench -stack quic:\n%s", s)
		}
		// -events adds connection events as JSON lines too.
		out, err = exec.CommandContext(ctx, bin, append(args, "-json", "-events")...).Output()
		if err != nil {
			t.Fatalf("%s -json: %v", stack, err)
		}
		var res map[string]any
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var v map[string]any
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("-json printed %q: %v", l, err)
			}
			if v["event"] == "bench" {
				res = v
			}
		}
		if res == nil || res["throughput_bps"].(float64) <= 0 || res["stack"] == "" {
			t.Fatalf("%s -json: %s", stack, out)
		}
		if retx, ok := res["retransmissions"]; !ok || (retx == nil) != (res["stack"] == "quic") {
			t.Fatalf("%s -json: retransmissions %v", stack, retx)
		}
	}
}

func TestCatAndUsage(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	if err := exec.CommandContext(ctx, bin, "nosuch").Run(); err == nil {
		t.Fatal("an unknown command succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("unknown command: %v", err)
	}
	lst := exec.CommandContext(ctx, bin, "listen", "-json", "127.0.0.1:0")
	lout, _ := lst.StdoutPipe()
	if err := lst.Start(); err != nil {
		t.Fatal(err)
	}
	defer lst.Process.Kill()
	lines := jsonLines(t, lout)
	pin := next(t, lines, "pin")["pin"].(string)
	addr := next(t, lines, "listening")["addr"].(string)
	cat := exec.CommandContext(ctx, bin, "cat", "-pin", pin, addr)
	cat.Stdin = strings.NewReader("hello\nworld\n")
	if out, err := cat.CombinedOutput(); err != nil {
		t.Fatalf("cat: %v\n%s", err, out)
	}
	for _, w := range []string{"hello", "world"} {
		m := next(t, lines, "message")
		if m["content"] != w || m["from"] == "" {
			t.Fatalf("listen got %v, want %q", m, w)
		}
	}
}

// TestMetrics: -metrics serves the Carriers' counters to Prometheus.
func TestMetrics(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	lst := exec.CommandContext(ctx, bin, "listen", "-json", "-metrics", "127.0.0.1:0", "127.0.0.1:0")
	lout, _ := lst.StdoutPipe()
	if err := lst.Start(); err != nil {
		t.Fatal(err)
	}
	defer lst.Process.Kill()
	lines := jsonLines(t, lout)
	url := next(t, lines, "metrics")["url"].(string)
	pin := next(t, lines, "pin")["pin"].(string)
	addr := next(t, lines, "listening")["addr"].(string)
	cat := exec.CommandContext(ctx, bin, "cat", "-pin", pin, addr)
	cat.Stdin = strings.NewReader("one\ntwo\nthree\n")
	if out, err := cat.CombinedOutput(); err != nil {
		t.Fatalf("cat: %v\n%s", err, out)
	}
	for range 3 {
		next(t, lines, "message")
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(body, []byte(`postsockets_messages_total{dir="received"`)) || !bytes.Contains(body, []byte("} 3")) {
		t.Fatalf("metrics:\n%s", body)
	}
}

// TestCatReceiveOnly: cat whose input is empty from the start
// (< /dev/null, a pipe that closes) only receives: it prints every
// message the peer sends and exits once the peer hangs up, as nc -l
// does, whichever end listens. Until 2 December it hung up at once and
// dropped them.
func TestCatReceiveOnly(t *testing.T) {
	for _, quietListens := range []bool{true, false} {
		t.Run(fmt.Sprintf("quietListens=%v", quietListens), func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			lst := exec.CommandContext(ctx, bin, "cat", "-json", "-l", "127.0.0.1:0")
			lout, _ := lst.StdoutPipe()
			var lerr, derr bytes.Buffer
			lst.Stderr = &lerr
			input := strings.NewReader("one\ntwo\nthree\n")
			if !quietListens {
				lst.Stdin = input
			}
			if err := lst.Start(); err != nil {
				t.Fatal(err)
			}
			defer lst.Process.Kill()
			lines := jsonLines(t, lout)
			pin := next(t, lines, "pin")["pin"].(string)
			addr := next(t, lines, "listening")["addr"].(string)
			dial := exec.CommandContext(ctx, bin, "cat", "-json", "-pin", pin, addr)
			dial.Stderr = &derr
			quiet, quietCmd, talkCmd := lines, lst, dial
			if quietListens {
				dial.Stdin = input
				dial.Stdout = io.Discard
			} else {
				dout, _ := dial.StdoutPipe()
				quiet, quietCmd, talkCmd = jsonLines(t, dout), dial, lst
			}
			if err := dial.Start(); err != nil {
				t.Fatal(err)
			}
			defer dial.Process.Kill()
			for _, w := range []string{"one", "two", "three"} {
				if m := next(t, quiet, "message"); m["content"] != w {
					t.Errorf("the quiet end got %v, want %q", m, w)
					break
				}
			}
			// Both exit, the talking end at the end of its input, the
			// quiet one once the talking one hung up.
			if t.Failed() {
				lst.Process.Kill()
				dial.Process.Kill()
			}
			if err := talkCmd.Wait(); err != nil {
				t.Errorf("the talking end: %v", err)
			}
			if err := quietCmd.Wait(); err != nil {
				t.Errorf("the quiet end: %v", err)
			}
			if t.Failed() {
				t.Logf("listener: %s\ndialer: %s", lerr.String(), derr.String())
			}
		})
	}
}
