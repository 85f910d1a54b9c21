package carrier_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/policy"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// authDeadline is the contract: a wrong credential fails Initiate within
// one second on loopback.
const authDeadline = time.Second

// credential is one client credential tried against a listener that
// requires client authentication.
type credential struct {
	name string
	sec  psi.Security
	ok   bool
}

// trustScheme is a listener's trust settings and the credentials tried
// against it.
type trustScheme struct {
	name   string
	server psi.Security
	good   psi.Pin // the pin the listener must see for the right client
	creds  []credential
}

func trustSchemes(t *testing.T) []trustScheme {
	ca := testcert.Must()
	other := testcert.Must()
	client, err := ca.Issue("client")
	if err != nil {
		t.Fatal(err)
	}
	serverPin := psi.PinCertificate(ca.Leaf.Leaf)
	clientPin := psi.PinCertificate(client.Leaf)
	psk := []byte("the right pre-shared key, 32 b..")
	pskCert, err := psi.PSKCertificate(psk)
	if err != nil {
		t.Fatal(err)
	}
	mine := []tls.Certificate{client}
	return []trustScheme{{
		name:   "ca",
		server: psi.Security{Certificates: []tls.Certificate{ca.Leaf}, RootCAs: ca.Pool, ClientAuth: true},
		good:   clientPin,
		creds: []credential{
			{name: "no certificate", sec: psi.Security{RootCAs: ca.Pool}},
			{name: "wrong certificate", sec: psi.Security{RootCAs: ca.Pool, Certificates: []tls.Certificate{other.Leaf}}},
			{name: "wrong pin", sec: psi.Security{PinnedKeys: []psi.Pin{psi.PinCertificate(other.Leaf.Leaf)}, Certificates: mine}},
			{name: "right certificate", sec: psi.Security{RootCAs: ca.Pool, Certificates: mine}, ok: true},
		},
	}, {
		name:   "pins",
		server: psi.Security{Certificates: []tls.Certificate{ca.Leaf}, PinnedKeys: []psi.Pin{clientPin}, ClientAuth: true},
		good:   clientPin,
		creds: []credential{
			{name: "no certificate", sec: psi.Security{PinnedKeys: []psi.Pin{serverPin}}},
			{name: "wrong certificate", sec: psi.Security{PinnedKeys: []psi.Pin{serverPin}, Certificates: []tls.Certificate{other.Leaf}}},
			{name: "right pin", sec: psi.Security{PinnedKeys: []psi.Pin{serverPin}, Certificates: mine}, ok: true},
		},
	}, {
		name:   "psk",
		server: psi.Security{PSK: psk, ClientAuth: true},
		good:   psi.PinCertificate(pskCert.Leaf),
		creds: []credential{
			{name: "no credential", sec: psi.Security{PinnedKeys: []psi.Pin{psi.PinCertificate(pskCert.Leaf)}}},
			{name: "wrong PSK", sec: psi.Security{PSK: []byte("a wrong pre-shared key, 32 bytes")}},
			{name: "right PSK", sec: psi.Security{PSK: psk}, ok: true},
		},
	}}
}

// TestTrustTable runs every stack, and the race, against every credential:
// only the right one gets through, each failure wraps ErrAuthentication
// within a second, and the listener never hands out a refused client.
func TestTrustTable(t *testing.T) {
	schemes := trustSchemes(t)
	for _, stack := range []string{"fsp", "quic", "tcp", ""} {
		name := stack
		if name == "" {
			name = "race"
		}
		t.Run(name, func(t *testing.T) {
			for _, sc := range schemes {
				t.Run(sc.name, func(t *testing.T) { testTrust(t, stack, sc) })
			}
		})
	}
}

func testTrust(t *testing.T, stack string, sc trustScheme) {
	scfg := &carrier.Config{Security: sc.server}
	if stack != "" {
		scfg.Policy.Stack(stack, policy.Require)
	}
	l := listen(t, scfg)
	remote := l.Remote("localhost")
	for _, cr := range sc.creds {
		if cr.ok {
			continue
		}
		t.Run(cr.name, func(t *testing.T) {
			ccfg := &carrier.Config{Security: cr.sec}
			if stack != "" {
				ccfg.Policy.Stack(stack, policy.Require)
			}
			start := time.Now()
			c, err := carrier.Initiate(ctxT(t), remote, ccfg)
			took := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatalf("Initiate succeeded over %s", c.Stack())
			}
			if !errors.Is(err, post.ErrAuthentication) {
				t.Fatalf("error does not wrap ErrAuthentication: %v", err)
			}
			if took > authDeadline {
				t.Fatalf("failed after %v, want within %v: %v", took, authDeadline, err)
			}
		})
	}
	// The right client gets through, and is the first and only Carrier
	// the listener hands out.
	for _, cr := range sc.creds {
		if !cr.ok {
			continue
		}
		ccfg := &carrier.Config{Security: cr.sec}
		if stack != "" {
			ccfg.Policy.Stack(stack, policy.Require)
		}
		c, err := carrier.Initiate(ctxT(t), remote, ccfg)
		if err != nil {
			t.Fatalf("%s: %v", cr.name, err)
		}
		defer c.Close()
		if stack != "" && c.Stack() != stack {
			t.Fatalf("%s: carrier over %s", cr.name, c.Stack())
		}
		if id := c.Peer(); !id.Verified || id.Leaf() == nil {
			t.Fatalf("%s: client sees an unverified server: %+v", cr.name, id)
		}
		if err := c.Send(ctxT(t), []byte("hello")); err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if id := s.Peer(); !id.Verified || id.Pin != sc.good {
			t.Fatalf("%s: listener sees peer %s (verified %v), want %s", cr.name, id.Pin, id.Verified, sc.good)
		}
		m, err := s.Receive(ctxT(t))
		if err != nil || string(m.Content) != "hello" {
			t.Fatalf("receive: %v, %v", m, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if s, err := l.Accept(ctx); err == nil {
		s.Close()
		t.Fatalf("the listener handed out a refused client (peer %s)", s.Peer().Pin)
	}
}

// A nil or empty Config fails fast and says what trust to configure.
func TestNoTrustConfigured(t *testing.T) {
	l := listen(t, serverConfig())
	for _, cfg := range []*carrier.Config{nil, {}} {
		start := time.Now()
		c, err := carrier.Initiate(ctxT(t), l.Remote("localhost"), cfg)
		if err == nil {
			c.Close()
			t.Fatal("Initiate trusted a certificate from an unknown CA")
		}
		if !errors.Is(err, post.ErrAuthentication) || !strings.Contains(err.Error(), "Security.RootCAs") {
			t.Fatalf("unclear error: %v", err)
		}
		if took := time.Since(start); took > authDeadline {
			t.Fatalf("failed after %v", took)
		}
	}
	_, err := carrier.Listen(ctxT(t), localAny, nil)
	if !errors.Is(err, post.ErrAuthentication) || !strings.Contains(err.Error(), "Security.Certificates") {
		t.Fatalf("Listen without a certificate: %v", err)
	}
}

// Forks report the identity their root verified, at both ends.
func TestPeerIdentityOfForks(t *testing.T) {
	for _, sc := range trustSchemes(t) {
		if sc.name == "pins" {
			continue
		}
		var right psi.Security
		for _, cr := range sc.creds {
			if cr.ok {
				right = cr.sec
			}
		}
		t.Run(sc.name, func(t *testing.T) {
			forStacks(t, func(t *testing.T, stack string) {
				c, s := pairOn(t, stack, &carrier.Config{Security: right}, &carrier.Config{Security: sc.server})
				ctx := ctxT(t)
				f, err := c.Fork(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := f.Send(ctx, []byte("fork")); err != nil {
					t.Fatal(err)
				}
				g, err := s.AcceptFork(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer g.Close()
				if c.Peer().Pin != f.Peer().Pin || !f.Peer().Verified || f.Peer().Leaf() == nil {
					t.Fatalf("client fork sees %+v, root %+v", f.Peer(), c.Peer())
				}
				if got := g.Peer(); got.Pin != sc.good || !got.Verified || got.Pin != s.Peer().Pin {
					t.Fatalf("server fork sees %s (verified %v), want %s", got.Pin, got.Verified, sc.good)
				}
			})
		})
	}
}

// A Responder's handler can authorize each request by its sender's key.
func TestResponderPeer(t *testing.T) {
	ctx := ctxT(t)
	sc := trustSchemes(t)[2] // psk
	r, err := carrier.NewResponder(ctx, localAny, &carrier.Config{Security: sc.server})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go r.Serve(ctx, func(q carrier.Request) {
		q.Reply.Send(ctx, []byte(q.Reply.Peer().Pin.String()))
	})
	c, err := carrier.Initiate(ctx, r.Listener().Remote("localhost"), &carrier.Config{Security: sc.creds[2].sec})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(ctx, []byte("who am I?")); err != nil {
		t.Fatal(err)
	}
	m, err := c.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Content) != sc.good.String() {
		t.Fatalf("responder saw %s, want %s", m.Content, sc.good)
	}
}

// TestTrustSameOutcome: settings that mix a PSK with certificates or pins
// would mean "PSK and pin" on FSP but "PSK or pin" on TLS, so every stack,
// and so the race, refuses them with ErrInvalid before any packet.
func TestTrustSameOutcome(t *testing.T) {
	ca := testcert.Must()
	client, err := ca.Issue("client")
	if err != nil {
		t.Fatal(err)
	}
	serverPin, clientPin := psi.PinCertificate(ca.Leaf.Leaf), psi.PinCertificate(client.Leaf)
	psk := []byte("the right pre-shared key, 32 b..")
	cases := []struct {
		name           string
		server, client psi.Security
	}{
		{"listener PSK and pins, client pinned without PSK",
			psi.Security{Certificates: []tls.Certificate{ca.Leaf}, PSK: psk, ClientAuth: true, PinnedKeys: []psi.Pin{clientPin}},
			psi.Security{Certificates: []tls.Certificate{client}, PinnedKeys: []psi.Pin{serverPin}}},
		{"listener without PSK, client PSK and pin",
			psi.Security{Certificates: []tls.Certificate{ca.Leaf}},
			psi.Security{PSK: psk, PinnedKeys: []psi.Pin{serverPin}}},
		{"listener PSK, client PSK and own certificate",
			psi.Security{PSK: psk},
			psi.Security{PSK: psk, Certificates: []tls.Certificate{client}}},
		// FSP keys its handshake with the PSK whatever InsecureSkipVerify
		// says, while TLS would skip the PSK's pin: an impostor without
		// the PSK was refused on FSP and accepted on QUIC and TCP.
		{"listener without PSK, client PSK and InsecureSkipVerify",
			psi.Security{Certificates: []tls.Certificate{ca.Leaf}},
			psi.Security{PSK: psk, InsecureSkipVerify: true}},
		{"listener PSK and InsecureSkipVerify, client without PSK",
			psi.Security{PSK: psk, InsecureSkipVerify: true},
			psi.Security{PinnedKeys: []psi.Pin{psi.PinCertificate(ca.Leaf.Leaf)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.server
			if srv.Check() != nil {
				if l, err := carrier.Listen(ctxT(t), post.Local{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, &carrier.Config{Security: srv}); !errors.Is(err, post.ErrInvalid) {
					t.Errorf("Listen: %v, want ErrInvalid", err)
					l.Close()
				}
				srv = psi.Security{PSK: srv.PSK}
			}
			l := listen(t, &carrier.Config{Security: srv})
			outcome := map[string]error{}
			for _, stack := range []string{"fsp", "quic", "tcp", ""} {
				ccfg := &carrier.Config{Security: tc.client}
				if stack != "" {
					ccfg.Policy.Stack(stack, policy.Require)
				}
				c, err := carrier.Initiate(ctxT(t), l.Remote("localhost"), ccfg)
				if err == nil {
					c.Close()
				}
				outcome[stack] = err
			}
			for _, stack := range []string{"fsp", "quic", "tcp", ""} {
				switch err := outcome[stack]; {
				case tc.client.Check() != nil && !errors.Is(err, post.ErrInvalid):
					t.Errorf("%q: %v, want ErrInvalid", stack, err)
				case (err == nil) != (outcome["fsp"] == nil):
					t.Errorf("fsp: %v; %q: %v", outcome["fsp"], stack, err)
				}
			}
		})
	}
}

// TestListenChainTooLargeForFSP: a certificate chain larger than an FSP
// handshake flight (16 KiB) leaves FSP out of the listener (with a
// logged reason) instead of failing Listen; the other stacks serve.
func TestListenChainTooLargeForFSP(t *testing.T) {
	var names []string
	for i := range 900 {
		names = append(names, fmt.Sprintf("host-%04d.example.com", i))
	}
	big := testcert.Must(names...)
	if n := len(big.Leaf.Certificate[0]); n < 16<<10 {
		t.Fatalf("certificate of %d bytes is not large enough", n)
	}
	l := listen(t, &carrier.Config{Security: psi.Security{Certificates: []tls.Certificate{big.Leaf}}})
	if _, ok := l.Addrs()["fsp"]; ok {
		t.Fatal("FSP listens with a chain it cannot send")
	}
	go func() {
		if s, err := l.Accept(ctxT(t)); err == nil {
			s.Close()
		}
	}()
	c, err := carrier.Initiate(ctxT(t), l.Remote("localhost"), &carrier.Config{Security: psi.Security{RootCAs: big.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("listening on %v; connected over %s", l.Addrs(), c.Stack())
}

// TestLazyWrongCredential: a lazy Carrier whose first message meets a
// refusal is ended by it; later Sends and Receives fail at once with
// ErrAuthentication instead of racing again for the same answer.
func TestLazyWrongCredential(t *testing.T) {
	l := listen(t, &carrier.Config{Security: psi.Security{PSK: []byte("the right pre-shared key, 32 b..")}})
	c, err := carrier.Initiate(ctxT(t), l.Remote("127.0.0.1"),
		&carrier.Config{Lazy: true, Security: psi.Security{PSK: []byte("a wrong pre-shared key, 32 by...")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ev := make(chan post.SendEvent, 4)
	if err := c.SendMsg(ctxT(t), &post.Message{Content: []byte("hi"), OnEvent: func(e post.SendEvent) { ev <- e }}); err != nil && !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("first Send: %v", err)
	}
	select {
	case e := <-ev:
		if !errors.Is(e.Err, post.ErrAuthentication) {
			t.Fatalf("send event %v: %v, want ErrAuthentication", e.Kind, e.Err)
		}
	case <-time.After(time.Second):
		t.Fatal("no send event within 1 s")
	}
	if err := c.Send(ctxT(t), []byte("again")); !errors.Is(err, post.ErrAuthentication) {
		t.Errorf("second Send: %v, want ErrAuthentication", err)
	}
	ctx, cancel := context.WithTimeout(ctxT(t), time.Second)
	defer cancel()
	if _, err := c.Receive(ctx); !errors.Is(err, post.ErrAuthentication) {
		t.Errorf("Receive: %v, want ErrAuthentication", err)
	}
}

// TestTrustAddressOnlyRemote: a Remote given by addresses alone names no
// server, so a dialler verifying chains checks the listener's IP
// address, on every stack: a certificate a trusted CA issued for another
// name is refused. QUIC checked no name at all and connected.
func TestTrustAddressOnlyRemote(t *testing.T) {
	ca := testcert.Must()
	other, err := ca.Issue("other.test") // no IP address in it
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		ok   bool
	}{{"certificate for another name", other, false}, {"certificate for the address", ca.Leaf, true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t, &carrier.Config{Security: psi.Security{Certificates: []tls.Certificate{tc.cert}}})
			for _, stack := range []string{"fsp", "quic", "tcp", ""} {
				ccfg := &carrier.Config{Security: psi.Security{RootCAs: ca.Pool}}
				if stack != "" {
					ccfg.Policy.Stack(stack, policy.Require)
				}
				remote := post.Remote{Addrs: []netip.AddrPort{l.Addr()}}
				c, err := carrier.Initiate(ctxT(t), remote, ccfg)
				won := ""
				if err == nil {
					won = c.Stack()
					c.Close()
				}
				switch {
				case tc.ok && err != nil:
					t.Errorf("%q: %v", stack, err)
				case !tc.ok && err == nil:
					t.Errorf("%q: connected over %s to a certificate for other.test", stack, won)
				case !tc.ok && !errors.Is(err, post.ErrAuthentication):
					t.Errorf("%q: %v, want ErrAuthentication", stack, err)
				}
			}
		})
	}
}

// TestExpiredClientCertSameOutcome: a client whose certificate expired
// after its first connection is refused on every stack, its session
// ticket notwithstanding. Before, FSP resumed its session (the ticket
// held the chain verified when it was issued), while crypto/tls on QUIC
// and TCP declines the session and verifies the chain anew.
func TestExpiredClientCertSameOutcome(t *testing.T) {
	ca := testcert.Must()
	// x509 validity has whole seconds: this one ends within 2 s.
	expiry := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
	cli, err := ca.IssueUntil("client", expiry)
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, &carrier.Config{Security: psi.Security{Certificates: []tls.Certificate{ca.Leaf}, RootCAs: ca.Pool, ClientAuth: true}})
	ctx := ctxT(t)
	go func() {
		for {
			c, err := l.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if m, err := c.Receive(ctx); err == nil {
					c.Send(ctx, m.Content)
				}
			}()
		}
	}()
	stacks := []string{"fsp", "quic", "tcp"}
	cfgs := map[string]*carrier.Config{}
	for _, stack := range stacks {
		ccfg := &carrier.Config{Security: psi.Security{RootCAs: ca.Pool, Certificates: []tls.Certificate{cli},
			SessionCache: tls.NewLRUClientSessionCache(4)}}
		ccfg.Policy.Stack(stack, policy.Require)
		cfgs[stack] = ccfg
		// A round trip: the session ticket comes after the handshake.
		c, err := carrier.Initiate(ctx, l.Remote("localhost"), ccfg)
		if err != nil {
			t.Fatalf("%s: %v", stack, err)
		}
		if err := c.Send(ctx, []byte("ping")); err != nil {
			t.Fatalf("%s: %v", stack, err)
		}
		if _, err := c.Receive(ctx); err != nil {
			t.Fatalf("%s: %v", stack, err)
		}
		c.Close()
	}
	time.Sleep(time.Until(expiry.Add(1100 * time.Millisecond)))
	for _, stack := range stacks {
		c, err := carrier.Initiate(ctx, l.Remote("localhost"), cfgs[stack])
		if err == nil {
			c.Close()
			t.Errorf("%s: a client whose certificate expired connected", stack)
		} else if !errors.Is(err, post.ErrAuthentication) {
			t.Errorf("%s: %v, want post.ErrAuthentication", stack, err)
		}
	}
}
