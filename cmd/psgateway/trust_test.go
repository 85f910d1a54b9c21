package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/psi"
)

// TestBackRequiresFrontCertificate: a back gateway that trusts by
// certificates (-cert, -key, -pins) serves its origin only to a front that
// proves a pinned key; a client with no certificate, or with a key not
// pinned, is refused (before, the back accepted any client: its listener
// did not ask for client certificates).
func TestBackRequiresFrontCertificate(t *testing.T) {
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "origin")
	})}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go origin.Serve(oln)
	t.Cleanup(func() { origin.Close() })

	dir := t.TempDir()
	backCert, backKey, backPin := keyFiles(t, dir, "back")
	frontCert, frontKey, frontPin := keyFiles(t, dir, "front")
	strangerCertFile, strangerKeyFile, _ := keyFiles(t, dir, "stranger")
	strangerCert, err := tls.LoadX509KeyPair(strangerCertFile, strangerKeyFile)
	if err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	startOne := func(args ...string) *gateway {
		o, err := parseOptions(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		g, err := start(context.Background(), o, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			g.shutdown(ctx)
		})
		return g
	}
	back := startOne("-mode", "back", "-listen", "127.0.0.1:0", "-origin", "http://"+oln.Addr().String(),
		"-cert", backCert, "-key", backKey, "-pins", hex.EncodeToString(frontPin[:]))
	front := startOne("-mode", "front", "-listen", "127.0.0.1:0", "-origin", back.addr,
		"-cert", frontCert, "-key", frontKey, "-pins", hex.EncodeToString(backPin[:]))

	get := func(c *http.Client, url string) (string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if got, err := get(&http.Client{Timeout: 10 * time.Second}, "http://"+front.addr+"/"); err != nil || got != "origin" {
		t.Fatalf("through the front: %q %v", got, err)
	}
	for name, sec := range map[string]psi.Security{
		"no certificate":  {PinnedKeys: []psi.Pin{backPin}},
		"an unpinned key": {PinnedKeys: []psi.Pin{backPin}, Certificates: []tls.Certificate{strangerCert}},
	} {
		tr := &httpcarrier.Transport{Config: &carrier.Config{Security: sec}, DialTimeout: 5 * time.Second}
		got, err := get(&http.Client{Transport: tr, Timeout: 10 * time.Second}, "http://"+back.addr+"/")
		tr.CloseIdleConnections()
		if err == nil {
			t.Errorf("a client with %s reached the origin through the back: %q", name, got)
		}
	}
}

// keyFiles writes a new key's certificate and private key under dir and
// returns the two files' names and the key's pin.
func keyFiles(t *testing.T, dir, name string) (string, string, psi.Pin) {
	t.Helper()
	k, err := rendezvous.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", k.Certificate.Certificate[0])
	der, err := x509MarshalKey(k.Certificate.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "PRIVATE KEY", der)
	x, err := x509.ParseCertificate(k.Certificate.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, psi.PinCertificate(x)
}

// TestBackNeedsFrontTrust: a back gateway trusting by certificates
// without -pins or -ca checked the front's certificate against the
// system roots, so anyone holding a certificate a public CA issued for
// client authentication reached the origin (and CONNECT targets, and a
// trusted Forwarded header); shown by hand with SSL_CERT_FILE naming a
// CA that signed the client's certificate: 200 from the origin. It now
// refuses to start; with -pins or -ca it starts.
func TestBackNeedsFrontTrust(t *testing.T) {
	dir := t.TempDir()
	backCert, backKey, _ := keyFiles(t, dir, "back")
	_, _, frontPin := keyFiles(t, dir, "front")
	base := []string{"-mode", "back", "-listen", "127.0.0.1:0", "-origin", "http://127.0.0.1:1", "-cert", backCert, "-key", backKey}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(args ...string) error {
		o, err := parseOptions(args, io.Discard)
		if err != nil {
			return err
		}
		g, err := start(context.Background(), o, log)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			g.shutdown(ctx)
		}
		return err
	}
	if err := run(base...); err == nil {
		t.Error("a back with -cert/-key and neither -pins nor -ca started: it would let in any client with a publicly trusted certificate")
	}
	if err := run(append(base, "-pins", hex.EncodeToString(frontPin[:]))...); err != nil {
		t.Errorf("with -pins: %v", err)
	}
	if err := run(append(base, "-ca", backCert)...); err != nil {
		t.Errorf("with -ca: %v", err)
	}
}
