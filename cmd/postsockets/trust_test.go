package main_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/postsockets/postsockets/association/rendezvous"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
)

// TestListenerPinsClients: a listener given -pin accepts only clients
// whose certificate has a pinned key; a client with no certificate, or
// another key, is refused. Before, the listener asked for no client
// certificate, so -pin on a listener let every client in.
func TestListenerPinsClients(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pin := clientKey(t, dir, "client")
	otherCert, otherKey, _ := clientKey(t, dir, "other")
	src := filepath.Join(dir, "src")
	content := []byte("pinned clients only")
	os.WriteFile(src, content, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"no certificate", nil, false},
		{"another key", []string{"-cert", otherCert, "-key", otherKey}, false},
		{"the pinned key", []string{"-cert", certFile, "-key", keyFile}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			recv := exec.CommandContext(ctx, bin, "recv", "-json", "-stack", "fsp", "-pin", hex.EncodeToString(pin[:]),
				"-o", filepath.Join(dir, "dst"), "127.0.0.1:0")
			rout, _ := recv.StdoutPipe()
			var rerr bytes.Buffer
			recv.Stderr = &rerr
			if err := recv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				recv.Process.Kill()
				recv.Wait()
			}()
			lines := jsonLines(t, rout)
			spin := next(t, lines, "pin")["pin"].(string)
			addr := next(t, lines, "listening")["addr"].(string)
			args := append([]string{"send", "-json", "-stack", "fsp", "-timeout", "10s", "-pin", spin}, tc.args...)
			out, err := exec.CommandContext(ctx, bin, append(args, addr, src)...).CombinedOutput()
			if !tc.ok {
				if err == nil {
					t.Fatalf("send succeeded, want a refusal\n%s", out)
				}
				return
			}
			// The file arrived (the sender's exit status also says whether
			// its Close was confirmed, which is not what this test checks).
			if got := next(t, lines, "received"); got["bytes"].(float64) != float64(len(content)) {
				t.Fatalf("recv reported %v; send: %v\n%s\nrecv stderr: %s", got, err, out, rerr.String())
			}
		})
	}
}

// clientKey writes a new key's certificate and private key under dir and
// returns the files' names and the key's pin.
func clientKey(t *testing.T, dir, name string) (string, string, psi.Pin) {
	t.Helper()
	k, err := rendezvous.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Certificate.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Certificate.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	x, err := x509.ParseCertificate(k.Certificate.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, psi.PinCertificate(x)
}

// TestSendCAChecksAddress: send -ca to an IP address checks that address
// in the listener's certificate, as curl does; it checked the name
// "postsockets" instead (meant for the self-signed keys, which are
// pinned and not named), so a certificate the CA issued for the address
// was refused and one it issued to the name "postsockets" was taken for
// any address.
func TestSendCAChecksAddress(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.Must() // its leaf names 127.0.0.1
	named, err := ca.Issue("postsockets")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.CA.Raw}), 0o600)
	src := filepath.Join(dir, "src")
	os.WriteFile(src, []byte("checked by address"), 0o600)
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		ok   bool
	}{{"certificate for the address", ca.Leaf, true}, {"certificate for the name postsockets", named, false}} {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile := writeKeyPair(t, dir, tc.cert)
			ctx := ctxT(t, time.Minute)
			recv := exec.CommandContext(ctx, bin, "recv", "-json", "-stack", "fsp", "-cert", certFile, "-key", keyFile,
				"-o", filepath.Join(dir, "dst"), "127.0.0.1:0")
			rout, _ := recv.StdoutPipe()
			if err := recv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				recv.Process.Kill()
				recv.Wait()
			}()
			addr := next(t, jsonLines(t, rout), "listening")["addr"].(string)
			out, err := exec.CommandContext(ctx, bin, "send", "-json", "-stack", "fsp", "-timeout", "10s", "-ca", caFile, addr, src).CombinedOutput()
			if (err == nil) != tc.ok {
				t.Fatalf("send: %v, want success %v\n%s", err, tc.ok, out)
			}
		})
	}
}

// writeKeyPair writes c's leaf and private key as PEM files under dir.
func writeKeyPair(t *testing.T, dir string, c tls.Certificate) (string, string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	name := hex.EncodeToString(c.Certificate[0][len(c.Certificate[0])-8:])
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	return certFile, keyFile
}
