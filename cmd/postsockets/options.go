package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"flag"
	"io/fs"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// options are the flags every command shares.
type options struct {
	fs       *flag.FlagSet
	stack    string
	prohibit string
	psk      string
	cert     string
	key      string
	pins     string
	ca       string
	insecure bool
	json     bool
	metrics  string
	verbose  bool
	timeout  time.Duration
	trace    string
	events   bool
	out      *output

	collector *collector // with -metrics
}

func newOptions(name string) *options {
	o := &options{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	f := o.fs
	f.StringVar(&o.stack, "stack", "", "use only this stack: fsp, quic or tcp (default: race them)")
	f.StringVar(&o.prohibit, "prohibit", "", "comma-separated stacks or features the policy prohibits (quic,tcp,0-rtt...)")
	f.StringVar(&o.psk, "psk", "", "pre-shared key file; created with a new key if missing (copy it to the other side)")
	f.StringVar(&o.cert, "cert", "", "certificate chain (PEM) identifying this end; with -key")
	f.StringVar(&o.key, "key", "", "private key (PEM) of -cert")
	f.StringVar(&o.pins, "pin", "", "comma-separated hex SHA-256 pins of the peer keys to accept (a listener then requires a client certificate)")
	f.StringVar(&o.ca, "ca", "", "CA certificates (PEM) that verify the peer (a listener then requires a client certificate)")
	f.BoolVar(&o.insecure, "insecure", false, "do not authenticate the peer (tests only)")
	f.BoolVar(&o.json, "json", false, "machine-readable output: one JSON object per line on stdout")
	f.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on this address (for example :9090)")
	f.BoolVar(&o.verbose, "v", false, "debug logging")
	f.StringVar(&o.trace, "trace", "", "write a per-connection trace (qlog) into this directory")
	f.BoolVar(&o.events, "events", false, "print connection events: path changes, soft errors, connection errors")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the peer")
	return o
}

func (o *options) parse(args []string) error {
	if err := o.fs.Parse(args); err != nil {
		return usageError{err}
	}
	o.out = newOutput(o.json)
	return nil
}

// config builds the Carrier configuration; server says whether this end
// listens.
func (o *options) config(server bool) (*carrier.Config, error) {
	cfg := &carrier.Config{}
	if o.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.stack != "" {
		cfg.Policy.Stack(o.stack, policy.Require)
	}
	for _, p := range strings.Split(o.prohibit, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if f, ok := psi.ParseFeature(p); ok {
			cfg.Policy.Feature(f, policy.Prohibit)
		} else {
			cfg.Policy.Stack(p, policy.Prohibit)
		}
	}
	sec, err := o.security(server)
	if err != nil {
		return nil, err
	}
	cfg.Security = sec
	cfg.Transient.HandshakeTimeout = o.timeout
	cfg.Transient.TraceDir = o.trace
	if o.events {
		cfg.OnEvent = o.out.connEvent
	}
	return cfg, nil
}

// security builds the trust settings. Nothing is built in: without
// flags a listener makes a key for this run and prints its pin.
func (o *options) security(server bool) (psi.Security, error) {
	var s psi.Security
	s.InsecureSkipVerify = o.insecure
	if o.psk != "" {
		psk, err := loadPSK(o.psk, o.out)
		if err != nil {
			return s, err
		}
		s.PSK = psk
		return s, nil
	}
	for _, p := range strings.Split(o.pins, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		b, err := hex.DecodeString(p)
		if err != nil || len(b) != 32 {
			return s, usagef("-pin %q: want 64 hex digits", p)
		}
		s.PinnedKeys = append(s.PinnedKeys, psi.Pin(b))
	}
	if o.ca != "" {
		data, err := os.ReadFile(o.ca)
		if err != nil {
			return s, err
		}
		s.RootCAs = x509.NewCertPool()
		if !s.RootCAs.AppendCertsFromPEM(data) {
			return s, usagef("-ca %s: no PEM certificates", o.ca)
		}
	}
	// A listener told which peers to accept checks its clients' keys:
	// without ClientAuth it would accept a client presenting none.
	s.ClientAuth = server && (len(s.PinnedKeys) > 0 || s.RootCAs != nil)
	switch {
	case o.cert != "":
		c, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return s, err
		}
		s.Certificates = []tls.Certificate{c}
	case server:
		c, pin, err := selfSigned()
		if err != nil {
			return s, err
		}
		s.Certificates = []tls.Certificate{c}
		o.out.note("this run's key; the other side needs: -pin %s", pin)
		o.out.event(map[string]any{"event": "pin", "pin": pin.String()})
	case len(s.PinnedKeys) == 0 && s.RootCAs == nil && !s.InsecureSkipVerify:
		// The system roots verify the server: a name with a public
		// certificate. Say what else works.
		o.out.note("verifying the server with the system roots; use -pin, -psk or -ca for a server of your own")
	}
	return s, nil
}

// selfSigned makes a certificate for this run and returns its pin.
func selfSigned() (tls.Certificate, psi.Pin, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, psi.Pin{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "postsockets"},
		DNSNames:     []string{"postsockets", "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, psi.Pin{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, psi.Pin{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, psi.PinCertificate(leaf), nil
}

// loadPSK reads a key file, creating it with 32 random bytes (hex) when
// it does not exist.
func loadPSK(file string, out *output) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(data)))
		if err != nil || len(k) < 16 {
			return nil, usagef("-psk %s: want at least 32 hex digits", file)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(file, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, err
	}
	out.note("created a new pre-shared key in %s; copy it to the other side and use -psk there", file)
	return k, nil
}

// addr parses a listening address: "PORT", ":PORT" or "HOST:PORT".
func listenAddr(s string) (post.Local, error) {
	if !strings.Contains(s, ":") {
		s = ":" + s
	}
	if strings.HasPrefix(s, ":") {
		s = "[::]" + s
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return post.Local{}, usagef("address %q: %v", s, err)
	}
	return post.Local{Addr: ap}, nil
}

// remoteOf parses the address to reach: "HOST:PORT". With -ca or the
// system roots the listener's certificate must name HOST (an IP address
// among its addresses); -pin and -psk check keys, not names.
func remoteOf(s string) (post.Remote, error) {
	r := post.RemoteName(s)
	if _, _, err := r.HostPort(); err != nil {
		return r, usagef("%v", err)
	}
	return r, nil
}

func fmtDur(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
