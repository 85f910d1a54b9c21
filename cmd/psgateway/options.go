package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/postsockets/postsockets/httpcarrier"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/psi"
)

// options are the gateway's settings, from flags and an optional config
// file of "name = value" lines (flags on the command line win).
type options struct {
	mode           string
	listen         string
	origin         string
	tlsCert        string
	tlsKey         string
	pskFile        string
	cert, key      string
	ca             string
	pins           string
	serverName     string
	stack          string
	preserveHost   bool
	trustForwarded bool
	logLevel       string
	connect        string
	connsPerAddr   int
	conns          int
	tunnelIdle     time.Duration
	bodyTimeout    time.Duration
	bodyMinRate    int
	writeTimeout   time.Duration
	reqsPerAddr    int
	reqsPerPrefix  int
	maxHeader      int

	stacks []psi.Stack // tests: stacks bound to a namespace
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("psgateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: psgateway -mode front|back [flags]

front: accepts HTTP/1.1 and HTTP/2 (TLS, or h2c with prior knowledge) from
       ordinary clients and forwards each request over its own FSP clone to
       a postsockets HTTP origin (-origin host:port).
back:  accepts HTTP over FSP clones and forwards to an ordinary HTTP origin
       (-origin http://host:port).

Upgrade requests (WebSocket) pass through both; CONNECT is forwarded by the
front and connected by the back to the targets listed in -connect.

Limits: the front holds at most -max-conns client connections, and
-max-conns-per-addr from one address (an IPv6 /64), tunnels included;
when full, a newcomer from a quieter address replaces an idle keep-alive
connection of the busiest. One address has at most
-max-requests-per-addr requests in progress, one /24 or /48
-max-requests-per-prefix; the back serves 256 requests a root at once
and the front shares them between /24s and /48s, a prefix holding many
waiting while one holding few is served. Request heads must arrive within 30 s
and be at most -max-header-bytes, each write of a response must complete
within -write-timeout, a
request body within -body-timeout plus 1 s per -body-min-rate bytes,
keep-alive connections idle at most 2 minutes, and a tunnel closes once
idle for -tunnel-idle-timeout.

`)
		fs.PrintDefaults()
	}
	config := fs.String("config", "", "file of `name = value` lines setting these flags")
	fs.StringVar(&o.mode, "mode", "", "front or back")
	fs.StringVar(&o.listen, "listen", "", "address to listen on (front: HTTP, default 127.0.0.1:8080; back: postsockets, default :4433)")
	fs.StringVar(&o.origin, "origin", "", "front: the postsockets origin host:port; back: the HTTP origin URL")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "front: certificate `file` (PEM) for HTTPS to clients; without it the front serves HTTP/1.1 and h2c")
	fs.StringVar(&o.tlsKey, "tls-key", "", "front: private key `file` (PEM) for -tls-cert")
	fs.StringVar(&o.pskFile, "psk-file", "", "`file` holding the pre-shared key in hex; authenticates both gateways")
	fs.StringVar(&o.cert, "cert", "", "postsockets certificate `file` (PEM): the back's identity, or the front's client certificate (a back trusting by certificates requires one)")
	fs.StringVar(&o.key, "key", "", "private key `file` (PEM) for -cert")
	fs.StringVar(&o.ca, "ca", "", "CA `file` (PEM) verifying the peer gateway (front: default the system roots; a back trusting by certificates needs -ca or -pins)")
	fs.StringVar(&o.pins, "pins", "", "comma-separated hex SHA-256 public key pins of the peer gateway; replace CA verification")
	fs.StringVar(&o.serverName, "server-name", "", "front: name to verify in the back's certificate (default the -origin host)")
	fs.StringVar(&o.stack, "stack", "fsp", "postsockets stack: fsp, quic, tcp, or any (race them)")
	fs.BoolVar(&o.preserveHost, "preserve-host", true, "pass the client's Host on instead of the origin's")
	fs.BoolVar(&o.trustForwarded, "trust-forwarded", false, "front: keep a Forwarded header the client sent (the back always keeps the front's)")
	fs.DurationVar(&o.tunnelIdle, "tunnel-idle-timeout", defaultTunnelIdle, "close a CONNECT tunnel through which no byte moved either way for this long; 0 means never")
	fs.DurationVar(&o.bodyTimeout, "body-timeout", httpcarrier.DefaultBodyTimeout, "front: a request body gets this long at first, and no wait for its next bytes may last longer; 0 means no bound")
	fs.DurationVar(&o.writeTimeout, "write-timeout", httpcarrier.DefaultWriteTimeout, "front: longest wait to hand response bytes to a client (one that stops reading is cut, its request aborted at the origin); time waiting for the origin does not count; 0 means no bound")
	fs.IntVar(&o.bodyMinRate, "body-min-rate", httpcarrier.DefaultBodyMinRate, "front: bytes a second that earn a request body 1 s more per that many bytes past -body-timeout (the slowest upload kept); 0 means none (a body gets -body-timeout in all)")
	fs.IntVar(&o.reqsPerAddr, "max-requests-per-addr", httpcarrier.DefaultMaxRequestsPerAddr, "front: requests in progress (HTTP/2 streams and tunnels included) one client address (an IPv6 /64) may have; past it 503 at once; 0 means no limit")
	fs.IntVar(&o.reqsPerPrefix, "max-requests-per-prefix", httpcarrier.DefaultMaxRequestsPerPrefix, "front: requests in progress one client prefix (an IPv4 /24, an IPv6 /48) may have; waiting ones included; past it 503 at once; 0 means no limit. Whatever it is, the front shares the back's 256 slots a root between prefixes: one alone holds at most 128 and its other requests wait")
	fs.IntVar(&o.maxHeader, "max-header-bytes", httpcarrier.DefaultFrontHeaderBytes, "front: largest request head (or HTTP/2 header list) a client may send; past it 431. 0 means net/http's 1 MiB")
	fs.IntVar(&o.conns, "max-conns", httpcarrier.DefaultMaxConns, "front: open connections (tunnels included) in all; when full, a newcomer from an address holding fewer replaces an idle keep-alive connection of the busiest address, or is closed; 0 means no limit")
	fs.IntVar(&o.connsPerAddr, "max-conns-per-addr", httpcarrier.DefaultMaxConnsPerAddr, "front: open connections (tunnels included) one client address (an IPv6 /64) may hold; 0 means no limit")
	fs.StringVar(&o.connect, "connect", "", "back: comma-separated `host:port` targets a CONNECT may reach, or * for any (an open proxy to whoever passes the front); default none. A name, or any target under *, that resolves to loopback, link-local, unspecified or multicast addresses is refused; list such a target as an address or localhost")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *config != "" {
		if err := applyConfig(fs, *config); err != nil {
			return nil, err
		}
	}
	switch o.mode {
	case "front":
		if o.listen == "" {
			o.listen = "127.0.0.1:8080"
		}
	case "back":
		if o.listen == "" {
			o.listen = ":4433"
		}
	default:
		return nil, errors.New("-mode must be front or back")
	}
	if o.origin == "" {
		return nil, errors.New("-origin is required")
	}
	if err := o.checkLimits(); err != nil {
		return nil, err
	}
	return o, nil
}

// checkLimits refuses a negative limit or timeout: 0 is the way to turn
// one off, and a negative one turned it off without a word.
func (o *options) checkLimits() error {
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"max-conns", int64(o.conns)}, {"max-conns-per-addr", int64(o.connsPerAddr)},
		{"max-requests-per-addr", int64(o.reqsPerAddr)}, {"max-requests-per-prefix", int64(o.reqsPerPrefix)},
		{"body-min-rate", int64(o.bodyMinRate)}, {"body-timeout", int64(o.bodyTimeout)},
		{"tunnel-idle-timeout", int64(o.tunnelIdle)}, {"write-timeout", int64(o.writeTimeout)}, {"max-header-bytes", int64(o.maxHeader)},
	} {
		if l.v < 0 {
			return fmt.Errorf("-%s must not be negative (0 turns it off)", l.name)
		}
	}
	return nil
}

// applyConfig sets the flags named in file that the command line did not.
func applyConfig(fs *flag.FlagSet, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s:%d: want name = value", file, n)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if name == "config" {
			return fmt.Errorf("%s:%d: config files do not nest", file, n)
		}
		if set[name] {
			continue
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("%s:%d: %w", file, n, err)
		}
	}
	return sc.Err()
}

func (o *options) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), nil
}

// security builds the postsockets trust settings. There is no built-in
// secret: without a PSK, certificate or pins the gateways cannot meet.
func (o *options) security() (psi.Security, error) {
	var s psi.Security
	if o.pskFile != "" {
		b, err := os.ReadFile(o.pskFile)
		if err != nil {
			return s, err
		}
		if s.PSK, err = hex.DecodeString(strings.TrimSpace(string(b))); err != nil {
			return s, fmt.Errorf("-psk-file: %w", err)
		}
		if len(s.PSK) < 16 {
			return s, errors.New("-psk-file: the key must be at least 16 bytes (32 hex digits)")
		}
	}
	if o.cert != "" || o.key != "" {
		c, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return s, fmt.Errorf("-cert/-key: %w", err)
		}
		s.Certificates = []tls.Certificate{c}
	}
	if o.ca != "" {
		b, err := os.ReadFile(o.ca)
		if err != nil {
			return s, err
		}
		s.RootCAs = x509.NewCertPool()
		if !s.RootCAs.AppendCertsFromPEM(b) {
			return s, errors.New("-ca: no certificate found")
		}
	}
	for p := range strings.SplitSeq(o.pins, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		var pin psi.Pin
		if b, err := hex.DecodeString(p); err != nil || len(b) != len(pin) {
			return s, fmt.Errorf("-pins: %q is not a hex SHA-256", p)
		} else {
			copy(pin[:], b)
		}
		s.PinnedKeys = append(s.PinnedKeys, pin)
	}
	s.ServerName = o.serverName
	if o.mode == "back" && len(s.PSK) == 0 && len(s.Certificates) == 0 {
		return s, errors.New("back: set -psk-file or -cert/-key")
	}
	if o.mode == "back" && len(s.PSK) == 0 && len(s.PinnedKeys) == 0 && s.RootCAs == nil {
		// The system roots would let in anyone holding a certificate a
		// public CA issued for client authentication.
		return s, errors.New("back: with -cert/-key, set -pins or -ca: the front's certificate is checked against them")
	}
	// Trusting by certificates, the back serves its origin only to a
	// front that proves a key -pins or -ca accepts: a listener checks
	// clients only with ClientAuth (with a PSK, every stack does anyway).
	s.ClientAuth = o.mode == "back" && len(s.PSK) == 0
	return s, nil
}

// policy requires the chosen stack.
func (o *options) policy() (policy.Context, error) {
	var p policy.Context
	switch o.stack {
	case "any", "":
	case "fsp", "quic", "tcp":
		p.Stack(o.stack, policy.Require)
	default:
		return p, fmt.Errorf("-stack %q: want fsp, quic, tcp or any", o.stack)
	}
	return p, nil
}

// requestLimitHandler bounds the requests in progress from one client
// address by -max-requests-per-addr and from one prefix by
// -max-requests-per-prefix (httpcarrier.RequestLimit), where 0 turns a
// bound off.
func (o *options) requestLimitHandler(h http.Handler) http.Handler {
	off := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	return &httpcarrier.RequestLimit{Handler: h, PerAddr: off(o.reqsPerAddr), PerPrefix: off(o.reqsPerPrefix)}
}

// bodyTimeoutHandler bounds the request bodies h reads by -body-timeout
// and -body-min-rate (httpcarrier.BodyTimeout), and each write of its
// responses by -write-timeout (httpcarrier.WriteTimeout), where 0 turns
// a bound off.
func (o *options) bodyTimeoutHandler(h http.Handler) http.Handler {
	wt := &httpcarrier.WriteTimeout{Handler: h, Timeout: o.writeTimeout}
	if o.writeTimeout == 0 {
		wt.Timeout = -1
	}
	bt := &httpcarrier.BodyTimeout{Handler: wt, Timeout: o.bodyTimeout, MinRate: o.bodyMinRate}
	if o.bodyTimeout == 0 {
		bt.Timeout = -1
	}
	if o.bodyMinRate == 0 {
		bt.MinRate = -1
	}
	return bt
}
