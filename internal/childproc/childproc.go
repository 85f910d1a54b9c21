// Package childproc runs a test binary's own listener test as a child
// process, for tests that kill a listener (kill -9) and start it again.
package childproc

import (
	"bufio"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Listener runs the test named test of this test binary with env
// ("NAME=value") added to its environment, and returns the process
// and the address it printed in a line "listening ADDR". A line
// "error ..." before it fails t. The process is killed at t's cleanup.
func Listener(t testing.TB, test, env string) (*exec.Cmd, netip.AddrPort) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v")
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
			go func() { // keep the pipe drained
				for sc.Scan() {
				}
			}()
			return cmd, netip.MustParseAddrPort(a)
		}
		if strings.HasPrefix(sc.Text(), "error ") {
			t.Fatalf("listener: %s", sc.Text())
		}
	}
	t.Fatal("the listener process ended without listening")
	return nil, netip.AddrPort{}
}
