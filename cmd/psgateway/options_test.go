package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestConfigFile: a config file sets flags, and the command line wins.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gw.conf")
	os.WriteFile(cfg, []byte("# a gateway\nmode = back\norigin = http://127.0.0.1:8081\nstack = quic\n\nlisten = :9999\n"), 0o600)
	o, err := parseOptions([]string{"-config", cfg, "-listen", "127.0.0.1:4433"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.mode != "back" || o.origin != "http://127.0.0.1:8081" || o.stack != "quic" || o.listen != "127.0.0.1:4433" {
		t.Fatalf("%+v", o)
	}
	os.WriteFile(cfg, []byte("nonsense\n"), 0o600)
	if _, err := parseOptions([]string{"-config", cfg}, io.Discard); err == nil {
		t.Fatal("a bad line was accepted")
	}
	if _, err := parseOptions([]string{"-mode", "sideways", "-origin", "x"}, io.Discard); err == nil {
		t.Fatal("a bad mode was accepted")
	}
	for _, f := range []string{"-max-conns=-5", "-max-conns-per-addr=-1", "-max-requests-per-addr=-1", "-max-requests-per-prefix=-1", "-body-min-rate=-1", "-body-timeout=-1s", "-tunnel-idle-timeout=-1m"} {
		// A negative limit turned it off silently, as 0 does.
		if _, err := parseOptions([]string{"-mode", "front", "-origin", "x:1", f}, io.Discard); err == nil {
			t.Errorf("%s was accepted", f)
		}
	}
	o, _ = parseOptions([]string{"-mode", "back", "-origin", "http://x"}, io.Discard)
	if _, err := o.security(); err == nil {
		t.Fatal("a back gateway without a key or certificate was accepted")
	}
}

// TestForwarded: each hop appends its element; a client's own Forwarded
// is dropped unless trusted.
func TestForwarded(t *testing.T) {
	in, _ := http.NewRequest("GET", "http://example.com/", nil)
	in.RemoteAddr = "[2001:db8::1]:4711"
	in.Header.Set("Forwarded", "for=evil")
	out := http.Header{}
	addForwarded(out, in, false)
	if got, want := out.Get("Forwarded"), `for="[2001:db8::1]:4711";proto=http;host="example.com"`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	in.Header.Set("Forwarded", out.Get("Forwarded"))
	in.RemoteAddr = "10.0.0.1:1"
	addForwarded(out, in, true)
	if got, want := out.Get("Forwarded"), `for="[2001:db8::1]:4711";proto=http;host="example.com", for="10.0.0.1:1";proto=http;host="example.com"`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
