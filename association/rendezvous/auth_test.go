package rendezvous

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func TestPeerID(t *testing.T) {
	k := testKey("alice")
	pin, err := psi.PinKey(k.Private.Public())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.ID.Pin(); err != nil || got != pin {
		t.Fatalf("ID %s: pin %v, %v; want %v", k.ID, got, err, pin)
	}
	if IDFromCertificate(k.Certificate.Leaf) != k.ID || len(k.ID) != peerIDLen || !strings.HasPrefix(string(k.ID), "bciq") {
		t.Fatalf("ID %s", k.ID)
	}
	if id, err := ParsePeerID(string(k.ID)); err != nil || id != k.ID {
		t.Fatalf("parse: %v", err)
	}
	last := k.ID[len(k.ID)-1]
	bad := []string{
		"", "alice", strings.ToUpper(string(k.ID)), "c" + string(k.ID[1:]), string(k.ID) + "a", string(k.ID[:len(k.ID)-1]),
		string(k.ID[:len(k.ID)-1]) + string(rune(last^1)), // non-canonical or another digest
		string(k.ID[:5]) + "!" + string(k.ID[6:]),
	}
	for _, s := range bad {
		if id, err := ParsePeerID(s); err == nil && id == k.ID {
			t.Errorf("%q parsed as %s", s, id)
		} else if err != nil && !errors.Is(err, post.ErrMalformed) {
			t.Errorf("%q: %v does not wrap ErrMalformed", s, err)
		}
	}

	// PEM round trip, and the certificate checks.
	p, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKeyPEM(p)
	if err != nil || k2.ID != k.ID {
		t.Fatalf("PEM round trip: %v, %v", k2, err)
	}
	if _, err := ParseKeyPEM([]byte("junk")); !errors.Is(err, post.ErrMalformed) {
		t.Errorf("junk PEM: %v", err)
	}
	k3, err := KeyFromCertificate(k.Certificate)
	if err != nil || k3.ID != k.ID {
		t.Fatalf("KeyFromCertificate: %v", err)
	}
	mixed := tls.Certificate{Certificate: k.Certificate.Certificate, PrivateKey: testKey("bob").Private}
	if _, err := KeyFromCertificate(mixed); !errors.Is(err, post.ErrAuthentication) {
		t.Errorf("mismatched certificate and key: %v", err)
	}
	if _, err := KeyFromCertificate(tls.Certificate{}); !errors.Is(err, post.ErrAuthentication) {
		t.Errorf("empty certificate: %v", err)
	}
}

// TestRefusedWithoutKey: registrations and polls that do not prove the key
// of self are refused, and leave nothing behind.
func TestRefusedWithoutKey(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{MaxWait: 50 * time.Millisecond})
	url := newServer(t, srv) + "/exchange"
	alice, mallory := testKey("alice"), testKey("mallory")

	// Unsigned: 401 with a nonce to sign.
	resp, err := http.Post(url, "application/json", bytes.NewReader(body("alice", "bob", "aliceUfrag")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	nonce := resp.Header.Get(HeaderNonce)
	if resp.StatusCode != http.StatusUnauthorized || nonce == "" || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("unsigned: %d, nonce %q", resp.StatusCode, nonce)
	}
	// Mallory signs a registration as alice with its own key: 403.
	if code, msg := postSigned(t, url, mallory, nonce, body("alice", "bob", "mmmm")); code != http.StatusForbidden {
		t.Errorf("mallory as alice: %d %s", code, msg)
	}
	// A signature over another body, a made-up nonce, a reused nonce.
	resp, _ = http.Post(url, "", nil)
	resp.Body.Close()
	nonce = resp.Header.Get(HeaderNonce)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body("alice", "bob", "other")))
	pub, sig := signRequest(alice, nonce, body("alice", "bob", "aliceUfrag"))
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderKey, pub)
	req.Header.Set(HeaderSignature, sig)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("signature over another body: %v %v", resp.Status, err)
	} else {
		resp.Body.Close()
	}
	forged := strings.Repeat("A", len(nonce))
	if code, msg := postSigned(t, url, alice, forged, body("alice", "bob", "aaaa")); code != http.StatusUnauthorized {
		t.Errorf("forged nonce: %d %s", code, msg)
	}
	if code, msg := postSigned(t, url, alice, nonce, body("alice", "bob", "aaaa")); code != http.StatusNoContent {
		t.Errorf("first use of a nonce: %d %s", code, msg)
	}
	if code, msg := postSigned(t, url, alice, nonce, body("alice", "bob", "aaaa")); code != http.StatusUnauthorized || !strings.Contains(msg, "used") {
		t.Errorf("replayed nonce: %d %s", code, msg)
	}

	// Carol waits for alice; mallory polls as alice to take carol's
	// offer. The client gives up with ErrAuthentication, carol's offer
	// stays with the server.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bobc := make(chan error, 1)
	go func() {
		_, err := client(newURL(url), "carol").Exchange(ctx, id("alice"), offer("carolUfrag"))
		bobc <- err
	}()
	impostor := &Client{URL: newURL(url), Key: mallory, Self: id("alice")}
	if o, err := impostor.Exchange(ctx, id("carol"), offer("malloryUfrag")); !errors.Is(err, post.ErrAuthentication) {
		t.Fatalf("mallory polling as alice: %+v, %v", o, err)
	}
	select {
	case err := <-bobc:
		t.Fatalf("carol's exchange ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	<-bobc
}

func newURL(exchangeURL string) string { return strings.TrimSuffix(exchangeURL, "/exchange") }

// TestNonceExpiry: a nonce older than NonceTTL is refused, and the used
// nonces are forgotten after two TTLs.
func TestNonceExpiry(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	srv := NewServer(Config{NonceTTL: time.Minute, MaxWait: 10 * time.Millisecond})
	srv.now = clock.now
	url := newServer(t, srv) + "/exchange"
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	nonce := resp.Header.Get(HeaderNonce)
	clock.advance(61 * time.Second)
	if code, msg := postSigned(t, url, testKey("alice"), nonce, body("alice", "bob", "aaaa")); code != http.StatusUnauthorized || !strings.Contains(msg, "expired") {
		t.Fatalf("stale nonce: %d %s", code, msg)
	}
	for range 3 {
		if code, _ := postAs(t, url, testKey("alice"), body("alice", "bob", "aaaa")); code != http.StatusNoContent {
			t.Fatalf("fresh nonce: %d", code)
		}
	}
	srv.mu.Lock()
	used := srv.nonces.used()
	srv.mu.Unlock()
	clock.advance(3 * time.Minute)
	postAs(t, url, testKey("alice"), body("alice", "bob", "aaaa"))
	srv.mu.Lock()
	after := srv.nonces.used()
	srv.mu.Unlock()
	if used != 3 || after != 1 {
		t.Errorf("used nonces: %d, then %d after three minutes; want 3, 1", used, after)
	}
}

// TestNonceFlood: past MaxNonces the server forgets the oldest used
// nonces but still refuses every replay, and fresh nonces keep working.
func TestNonceFlood(t *testing.T) {
	srv := NewServer(Config{MaxNonces: 4, MaxWait: 10 * time.Millisecond, RequestRate: 1000, RequestBurst: 1000})
	url := newServer(t, srv) + "/exchange"
	var used []string
	for i := range 12 {
		resp, err := http.Post(url, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		nonce := resp.Header.Get(HeaderNonce)
		if code, msg := postSigned(t, url, testKey("alice"), nonce, body("alice", "bob", "aaaa")); code != http.StatusNoContent {
			t.Fatalf("request %d: %d %s", i, code, msg)
		}
		used = append(used, nonce)
	}
	srv.mu.Lock()
	n := srv.nonces.used()
	srv.mu.Unlock()
	if n > 5 {
		t.Errorf("%d used nonces remembered, MaxNonces 4", n)
	}
	for i, nonce := range used {
		if code, _ := postSigned(t, url, testKey("alice"), nonce, body("alice", "bob", "aaaa")); code != http.StatusUnauthorized {
			t.Errorf("replay of nonce %d: %d", i, code)
		}
	}
}

// TestDisconnectFrees: a client that goes away while polling frees its
// registration at once, not after EntryTTL.
func TestDisconnectFrees(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{MaxWait: time.Minute, EntryTTL: time.Hour})
	url := newServer(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := client(url, "alice").Exchange(ctx, id("bob"), offer("aliceUfrag"))
		done <- err
	}()
	for srv.Len() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	deadline := time.Now().Add(time.Second)
	for srv.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d registrations 1 s after the client left", srv.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.perKey) != 0 {
		t.Errorf("per-key counts left: %v", srv.perKey)
	}
	for p, src := range srv.sources {
		if src.entries != 0 {
			t.Errorf("source %v still holds %d", p, src.entries)
		}
	}
}

// clientFrom returns an HTTP client whose connections come from addr.
func clientFrom(addr string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 100}}
}

// TestFillFromOneClient: one client address with many keys, or one key
// asking for many peers, holds no more than its limits; when it has filled
// the whole table, another client's registration displaces one of its
// entries, and that client's exchange goes through at once.
func TestFillFromOneClient(t *testing.T) {
	checkGoroutines(t)
	const perSource, perKey = 20, 4
	srv := NewServer(Config{
		MaxWait: 5 * time.Second, MaxEntries: perSource, MaxPerSource: perSource, MaxPerKey: perKey,
		RequestRate: 1000, RequestBurst: 1000, // this test is about the table, not the rate
	})
	url := newServer(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	attacker := clientFrom("127.0.0.2")
	defer attacker.CloseIdleConnections()
	var wg sync.WaitGroup
	attack, stop := context.WithCancel(ctx)
	defer stop()
	// One key asking for many peers, then many keys.
	for i := range 60 {
		k := testKey("attacker")
		if i >= 10 {
			k = testKey(fmt.Sprintf("attacker%d", i))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &Client{URL: url, HTTP: attacker, Key: k}
			// Past the limits the server answers 429 or 503, which the
			// client retries until its context ends.
			c.Exchange(attack, id(fmt.Sprintf("victim%d", i)), offer("attackUfrag"))
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Len() < perSource && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.Len(); n != perSource {
		t.Fatalf("the attacker holds %d registrations, want the limit %d", n, perSource)
	}
	srv.mu.Lock()
	for k, n := range srv.perKey {
		if n > perKey {
			t.Errorf("key %s holds %d registrations, limit %d", k, n, perKey)
		}
	}
	srv.mu.Unlock()

	// The table is full. Alice and bob, from another address, meet.
	legit := clientFrom("127.0.0.1")
	defer legit.CloseIdleConnections()
	start := time.Now()
	bobc := make(chan error, 1)
	go func() {
		_, err := (&Client{URL: url, HTTP: legit, Key: testKey("bob")}).Exchange(ctx, id("alice"), offer("bobUfrag"))
		bobc <- err
	}()
	if _, err := (&Client{URL: url, HTTP: legit, Key: testKey("alice")}).Exchange(ctx, id("bob"), offer("aliceUfrag")); err != nil {
		t.Fatalf("alice during the attack: %v", err)
	}
	if err := <-bobc; err != nil {
		t.Fatalf("bob during the attack: %v", err)
	}
	t.Logf("alice and bob met in %v while one address filled the table", time.Since(start))
	stop()
	wg.Wait()
}

// TestRequestRate: one source past its request rate gets 429; another
// source is still served.
func TestRequestRate(t *testing.T) {
	srv := NewServer(Config{RequestRate: 1, RequestBurst: 5})
	url := newServer(t, srv) + "/exchange"
	attacker, legit := clientFrom("127.0.0.2"), clientFrom("127.0.0.1")
	defer attacker.CloseIdleConnections()
	defer legit.CloseIdleConnections()
	codes := map[int]int{}
	for range 10 {
		resp, err := attacker.Post(url, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	if codes[http.StatusUnauthorized] != 5 || codes[http.StatusTooManyRequests] != 5 {
		t.Errorf("attacker's answers: %v", codes)
	}
	resp, err := legit.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("other source: %d", resp.StatusCode)
	}
}

// TestClientAddr: behind a proxy, the limits apply to the address the
// proxy reports, IPv6 clients by /64.
func TestClientAddr(t *testing.T) {
	srv := NewServer(Config{RequestRate: 1, RequestBurst: 2, ClientAddr: func(r *http.Request) netip.Addr {
		a, _ := netip.ParseAddr(r.Header.Get("X-Client"))
		return a
	}})
	url := newServer(t, srv) + "/exchange"
	post := func(client string) int {
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		req.Header.Set("X-Client", client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, c := range []struct {
		client string
		want   int
	}{
		{"2001:db8::1", http.StatusUnauthorized},
		{"2001:db8::2", http.StatusUnauthorized},
		{"2001:db8::3", http.StatusTooManyRequests}, // same /64
		{"2001:db8:0:1::1", http.StatusUnauthorized},
		{"192.0.2.1", http.StatusUnauthorized},
		{"", http.StatusUnauthorized}, // the connection's address
	} {
		if got := post(c.client); got != c.want {
			t.Errorf("request %d from %q: %d, want %d", i, c.client, got, c.want)
		}
	}
}

func FuzzParsePeerID(f *testing.F) {
	f.Add(string(testKey("alice").ID))
	f.Add("b")
	f.Add("bciq" + strings.Repeat("a", 52))
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParsePeerID(s)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		p, err := id.Pin()
		if err != nil || IDFromPin(p) != id || string(id) != s {
			t.Fatalf("%q accepted but does not round-trip", s)
		}
	})
}

// FuzzAuthHeaders feeds the server's request authentication arbitrary
// headers.
func FuzzAuthHeaders(f *testing.F) {
	srv := NewServer(Config{})
	srv.init()
	k := testKey("alice")
	b := body("alice", "bob", "aaaa")
	srv.mu.Lock()
	nonce := srv.nonces.mint(time.Now(), [8]byte{1})
	srv.mu.Unlock()
	pub, sig := signRequest(k, nonce, b)
	f.Add(nonce, pub, sig)
	f.Add("", "", "")
	f.Add(nonce, pub, strings.Repeat("A", 86))
	f.Add(strings.Repeat("_", 43), b64.EncodeToString(make([]byte, ed25519.PublicKeySize)), sig)
	f.Fuzz(func(t *testing.T, nonce, pub, sig string) {
		id, err := srv.authenticate(nonce, pub, sig, b)
		if err == nil && id != k.ID {
			t.Fatalf("authenticated as %s", id)
		}
		if err != nil && !errors.Is(err, post.ErrMalformed) && !errors.Is(err, post.ErrAuthentication) && !errors.Is(err, post.ErrRefused) {
			t.Fatalf("error %v wraps no sentinel", err)
		}
	})
}

// TestFillAttack runs a fill attack against a server with the default
// limits: one address registers under fresh keys as fast as 300 clients
// can for 3 s, while pairs from another address meet ten times a second.
// At least 99% of them must meet within 2 s.
func TestFillAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s attack")
	}
	checkGoroutines(t)
	srv := NewServer(Config{})
	url := newServer(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	attack, stop := context.WithCancel(ctx)
	defer stop()
	attacker := clientFrom("127.0.0.2")
	defer attacker.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; attack.Err() == nil; j++ {
				k, _ := GenerateKey()
				c := &Client{URL: url, HTTP: attacker, Key: k}
				c.Exchange(attack, id(fmt.Sprintf("victim%d-%d", i, j)), offer("attackUfrag"))
			}
		}()
	}

	var (
		mu    sync.Mutex
		times []time.Duration
		fails int
		held  int
	)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lwg sync.WaitGroup
	for range 30 {
		<-tick.C
		held = max(held, srv.heldFrom(netip.MustParseAddr("127.0.0.2")))
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			legit := clientFrom("127.0.0.1")
			defer legit.CloseIdleConnections()
			ka, _ := GenerateKey()
			kb, _ := GenerateKey()
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			start := time.Now()
			errc := make(chan error, 1)
			go func() {
				_, err := (&Client{URL: url, HTTP: legit, Key: kb}).Exchange(pctx, ka.ID, offer("bobUfrag"))
				errc <- err
			}()
			_, err := (&Client{URL: url, HTTP: legit, Key: ka}).Exchange(pctx, kb.ID, offer("aliceUfrag"))
			err = errors.Join(err, <-errc)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails++
				t.Logf("pair failed: %v", err)
				return
			}
			times = append(times, time.Since(start))
		}()
	}
	lwg.Wait()
	stop()
	wg.Wait()
	total := len(times) + fails
	slices.Sort(times)
	var p99 time.Duration
	if len(times) > 0 {
		p99 = times[len(times)*99/100]
	}
	t.Logf("fill attack: %d/%d pairs met (p99 %v); the attacker held at most %d registrations", len(times), total, p99, held)
	if fails*100 > total {
		t.Errorf("%d of %d pairs failed to meet during the attack", fails, total)
	}
	if held > DefaultMaxPerSource {
		t.Errorf("one address held %d registrations, limit %d", held, DefaultMaxPerSource)
	}
}

// heldFrom counts the registrations in s's table made from address a.
func (s *Server) heldFrom(a netip.Addr) int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.entries {
		if e.src.Contains(a) {
			n++
		}
	}
	return n
}

func FuzzParseKeyPEM(f *testing.F) {
	good, _ := testKey("alice").MarshalPEM()
	f.Add(good)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyPEM(data)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if id, err := IDFromPublicKey(k.Private.Public()); err != nil || id != k.ID {
			t.Fatalf("key %s does not match its ID", k.ID)
		}
	})
}
