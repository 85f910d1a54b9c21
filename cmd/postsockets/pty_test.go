//go:build linux || darwin

package main_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestProgressBar runs send under a pseudo-terminal: a long transfer
// shows a bar with the rate and the time left; without a terminal (the
// other tests) it prints none.
func TestProgressBar(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	src := filepath.Join(t.TempDir(), "src")
	data := make([]byte, 64<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	recv := exec.CommandContext(ctx, bin, "recv", "-json", "-stack", "tcp", "-o", os.DevNull, "127.0.0.1:0")
	rout, _ := recv.StdoutPipe()
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	defer recv.Wait()
	lines := jsonLines(t, rout)
	pin := next(t, lines, "pin")["pin"].(string)
	addr := next(t, lines, "listening")["addr"].(string)
	send := exec.CommandContext(ctx, bin, "send", "-stack", "tcp", "-pin", pin, addr, src)
	tty, err := pty.StartWithSize(send, &pty.Winsize{Rows: 24, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out bytes.Buffer
	io.Copy(&out, tty) // until the tool exits (EIO)
	if err := send.Wait(); err != nil {
		t.Fatalf("send: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, w := range []string{"sending", "100%", "B/s)", "sent 67108864 bytes", "connected over tcp"} {
		if !strings.Contains(s, w) {
			t.Fatalf("no %q under a terminal:\n%q", w, s)
		}
	}
	// [elapsed:time left]
	if !regexp.MustCompile(`\[[0-9hms.]+:[0-9hms.]+\]`).MatchString(s) {
		t.Fatalf("no elapsed and remaining time under a terminal:\n%q", s)
	}
	if next(t, lines, "received")["bytes"].(float64) != float64(len(data)) {
		t.Fatal("recv got another size")
	}
}
