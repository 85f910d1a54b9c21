package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFrontExitClosesRoots: a front gateway that stops (SIGTERM) closes
// its roots to the back before it exits, so the back's own graceful
// shutdown finds no client left and returns nil. Until 2 December the
// front closed them in the background and exited first: the back, on FSP,
// waited for the gone front until its shutdown deadline (10 s in
// psgateway) or its idle timeout.
func TestFrontExitClosesRoots(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "psgateway")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	defer origin.Close()
	psk := make([]byte, 32)
	rand.Read(psk)
	pskFile := filepath.Join(dir, "psk.hex")
	os.WriteFile(pskFile, []byte(hex.EncodeToString(psk)+"\n"), 0o600)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o, err := parseOptions([]string{"-mode", "back", "-listen", "127.0.0.1:0", "-origin", origin.URL, "-psk-file", pskFile, "-stack", "fsp"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	back, err := start(context.Background(), o, log)
	if err != nil {
		t.Fatal(err)
	}
	// The front, a process of its own; it logs where it listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	frontAddr := ln.Addr().String()
	ln.Close()
	front := exec.Command(bin, "-mode", "front", "-listen", frontAddr, "-origin", back.addr, "-psk-file", pskFile, "-stack", "fsp")
	stderr, _ := front.StderrPipe()
	if err := front.Start(); err != nil {
		t.Fatal(err)
	}
	defer front.Process.Kill()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "front gateway") {
	}
	go io.Copy(io.Discard, stderr)
	resp, err := http.Get("http://" + frontAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" {
		t.Fatalf("through the gateways: %q", body)
	}
	front.Process.Signal(syscall.SIGTERM)
	if err := front.Wait(); err != nil {
		t.Fatalf("front: %v", err)
	}
	// The front's root is closed: nothing is left for the back to wait
	// for. (The bound only keeps a failure from hanging the test.)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := back.shutdown(ctx); err != nil {
		t.Fatalf("the back's shutdown after the front exited: %v", err)
	}
}
