package main_test

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestP2P runs a rendezvous server and two peers, through the binary,
// on loopback: each learns the other's ID, they connect and exchange a
// line each.
func TestP2P(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	rv := exec.CommandContext(ctx, bin, "rendezvous", "-json", "127.0.0.1:0")
	rout, _ := rv.StdoutPipe()
	if err := rv.Start(); err != nil {
		t.Fatal(err)
	}
	defer rv.Process.Kill()
	url := "http://" + next(t, jsonLines(t, rout), "listening")["addr"].(string)
	dir := t.TempDir()
	ids := map[string]string{}
	for _, p := range []string{"a", "b"} {
		cmd := exec.CommandContext(ctx, bin, "p2p", "-json", "-keyfile", filepath.Join(dir, p))
		out, _ := cmd.StdoutPipe()
		cmd.Start()
		ids[p] = next(t, jsonLines(t, out), "id")["id"].(string)
		if err := cmd.Wait(); err == nil {
			t.Fatal("p2p without -peer succeeded")
		}
	}
	type peer struct {
		cmd   *exec.Cmd
		lines <-chan map[string]any
		in    interface {
			Write([]byte) (int, error)
			Close() error
		}
	}
	peers := map[string]*peer{}
	for me, other := range map[string]string{"a": "b", "b": "a"} {
		cmd := exec.CommandContext(ctx, bin, "p2p", "-json", "-loopback", "-rendezvous", url,
			"-keyfile", filepath.Join(dir, me), "-peer", ids[other])
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		peers[me] = &peer{cmd: cmd, lines: jsonLines(t, out), in: in}
	}
	for me, p := range peers {
		next(t, p.lines, "connected")
		p.in.Write([]byte("hello from " + me + "\n"))
	}
	for me, other := range map[string]string{"a": "b", "b": "a"} {
		if m := next(t, peers[me].lines, "message"); m["content"] != "hello from "+other {
			t.Fatalf("%s got %v", me, m)
		}
	}
	for _, p := range peers {
		p.in.Close()
	}
	for me, p := range peers {
		if err := p.cmd.Wait(); err != nil {
			t.Logf("%s exited: %v", me, err) // the second to close may find the first gone
		}
	}
}
