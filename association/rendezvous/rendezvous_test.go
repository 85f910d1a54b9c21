package rendezvous

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/ice"
	"github.com/postsockets/postsockets/internal/leakcheck"
	"github.com/postsockets/postsockets/post"
)

func checkGoroutines(t *testing.T) { leakcheck.Check(t) }

func loopbackICE() ice.Config {
	return ice.Config{
		NetworkTypes:    []string{ice.UDP4},
		IncludeLoopback: true,
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() },
	}
}

// testKeys holds one key per test name, made on first use.
var testKeys = struct {
	sync.Mutex
	m map[string]*Key
}{m: make(map[string]*Key)}

// testKey returns the test key for a name such as "alice". It is derived
// from the name, so the NAT tests' subprocesses agree on it.
func testKey(name string) *Key {
	testKeys.Lock()
	defer testKeys.Unlock()
	k := testKeys.m[name]
	if k == nil {
		seed := sha256.Sum256([]byte("postsockets rendezvous test key " + name))
		var err error
		if k, err = NewKey(ed25519.NewKeyFromSeed(seed[:])); err != nil {
			panic(err)
		}
		testKeys.m[name] = k
	}
	return k
}

// id returns the peer ID of the test key for a name.
func id(name string) PeerID { return testKey(name).ID }

// client returns a Client at url with the test key for name.
func client(url, name string) *Client { return &Client{URL: url, Key: testKey(name)} }

// body returns the JSON request of self wanting peer.
func body(self, peer, ufrag string) []byte {
	b, _ := json.Marshal(request{Self: id(self), Peer: id(peer), Offer: offer(ufrag)})
	return b
}

// postAs posts a request signed with k over a fresh nonce.
func postAs(t *testing.T, url string, k *Key, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	nonce := resp.Header.Get(HeaderNonce)
	if resp.StatusCode != http.StatusUnauthorized || nonce == "" {
		t.Fatalf("unsigned request: %d, nonce %q", resp.StatusCode, nonce)
	}
	return postSigned(t, url, k, nonce, body)
}

// postSigned posts a request signed with k over nonce.
func postSigned(t *testing.T, url string, k *Key, nonce string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	pub, sig := signRequest(k, nonce, body)
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderKey, pub)
	req.Header.Set(HeaderSignature, sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

func offer(ufrag string) Offer {
	return Offer{
		Ufrag:      ufrag,
		Pwd:        "abcdefghijklmnopqrstuvwxyz",
		Candidates: []string{"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"},
	}
}

// newServer starts srv on loopback and returns its URL.
func newServer(t *testing.T, srv *Server) string {
	t.Helper()
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	return ts.URL
}

func newServerB(b *testing.B) string {
	srv := NewServer(Config{MaxWait: time.Second})
	ts := httptest.NewServer(srv)
	b.Cleanup(func() { srv.Close(); ts.Close() })
	return ts.URL
}

// connectBoth runs Connect for alice and bob at once.
func connectBoth(t *testing.T, ctx context.Context, url string, cfgA, cfgB ice.Config) (*Session, *Session) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		sb   *Session
		errB error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sb, errB = Connect(ctx, ConnectConfig{Key: testKey("bob"), Peer: id("alice"), RendezvousURL: url, ICE: cfgB})
	}()
	sa, errA := Connect(ctx, ConnectConfig{Key: testKey("alice"), Peer: id("bob"), RendezvousURL: url, ICE: cfgA})
	wg.Wait()
	if errA != nil || errB != nil {
		if sa != nil {
			sa.Close()
		}
		if sb != nil {
			sb.Close()
		}
		t.Fatalf("connect: alice %v, bob %v", errA, errB)
	}
	t.Cleanup(func() { sa.Close(); sb.Close() })
	return sa, sb
}

func TestConnectLoopback(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := newServer(t, NewServer(Config{MaxWait: 200 * time.Millisecond}))
	sa, sb := connectBoth(t, ctx, url, loopbackICE(), loopbackICE())

	if sa.Controlling != Controlling(id("alice"), id("bob")) || sb.Controlling == sa.Controlling {
		t.Fatalf("controlling: alice %v, bob %v", sa.Controlling, sb.Controlling)
	}
	if sa.Local.Type != ice.Host || sa.Remote.Type != ice.Host {
		t.Errorf("selected %v -> %v", sa.Local, sa.Remote)
	}
	if p := sa.Path(); p.Local != sa.Local.Addr || p.Remote != sb.Local.Addr || sa.PeerAddrPort() != sb.Local.Addr {
		t.Errorf("alice's path %v, peer %v; bob's local %v", p, sa.PeerAddrPort(), sb.Local.Addr)
	}
	if sa.PeerAddr.String() != sb.Local.Addr.String() {
		t.Errorf("alice's peer address %v, bob's local %v", sa.PeerAddr, sb.Local.Addr)
	}
	buf := make([]byte, 1500)
	for i := range 20 {
		msg := []byte(strings.Repeat("ping", i+1))
		if _, err := sa.Conn.WriteTo(msg, sa.PeerAddr); err != nil {
			t.Fatal(err)
		}
		n, from, err := sb.Conn.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("bob read %q, %v", buf[:n], err)
		}
		if _, err := sb.Conn.WriteTo(bytes.ToUpper(msg), from); err != nil {
			t.Fatal(err)
		}
		n, _, err = sa.Conn.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], bytes.ToUpper(msg)) {
			t.Fatalf("alice read %q, %v", buf[:n], err)
		}
	}
}

// TestConsent checks that an offer only reaches the peer it names, and only
// once that peer asks for its owner.
func TestConsent(t *testing.T) {
	checkGoroutines(t)
	// One poll outlasts the short exchanges below, so that each ends
	// while its poll waits and the server drops its registration at once.
	// With polls shorter than the exchanges, one could end between two
	// polls, when no request of its client is open: the registration then
	// rightly waits out EntryTTL for the next poll.
	srv := NewServer(Config{MaxWait: 5 * time.Second})
	url := newServer(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type result struct {
		o   Offer
		err error
	}
	alice := make(chan result, 1)
	go func() {
		o, err := client(url, "alice").Exchange(ctx, id("bob"), offer("aliceUfrag"))
		alice <- result{o, err}
	}()
	// Wait until alice is registered.
	for srv.Len() == 0 {
		time.Sleep(5 * time.Millisecond)
	}

	// Mallory asks for alice, and bob asks for carol: neither matches
	// alice's registration, so both time out empty-handed.
	for _, names := range [][2]string{{"mallory", "alice"}, {"bob", "carol"}} {
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		o, err := client(url, names[0]).Exchange(short, id(names[1]), offer(names[0]+"Ufrag"))
		cancel()
		if !errors.Is(err, post.ErrTimeout) {
			t.Fatalf("%s asking for %s: got %+v, %v", names[0], names[1], o, err)
		}
	}
	select {
	case r := <-alice:
		t.Fatalf("alice answered early: %+v, %v", r.o, r.err)
	default:
	}

	// Bob asks for alice: both get the other's offer.
	o, err := client(url, "bob").Exchange(ctx, id("alice"), offer("bobUfrag"))
	if err != nil || o.Ufrag != "aliceUfrag" || o.Controlling != Controlling(id("alice"), id("bob")) {
		t.Fatalf("bob got %+v, %v", o, err)
	}
	r := <-alice
	if r.err != nil || r.o.Ufrag != "bobUfrag" || r.o.Controlling != Controlling(id("bob"), id("alice")) {
		t.Fatalf("alice got %+v, %v", r.o, r.err)
	}
	// Mallory's and bob's polls went away, and their registrations with
	// them (as soon as the server sees the connections close).
	for deadline := time.Now().Add(time.Second); srv.Len() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d entries left 1 s after the exchange, want 0", srv.Len())
		}
	}
}

func post1(t *testing.T, url, ctype string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(url, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

func TestMalformed(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{MaxWait: 10 * time.Millisecond})
	url := newServer(t, srv)
	good := body("a", "b", "abcd")
	mk := func(f func(*request)) string {
		r := request{Self: id("a"), Peer: id("b"), Offer: offer("abcd")}
		f(&r)
		b, _ := json.Marshal(r)
		return string(b)
	}
	for name, body := range map[string]string{
		"empty":          "",
		"not json":       "hello",
		"truncated":      string(good[:len(good)-3]),
		"trailing":       string(good) + "{}",
		"array":          "[]",
		"wrong types":    `{"self":1,"peer":2}`,
		"no self":        mk(func(r *request) { r.Self = "" }),
		"bad self":       mk(func(r *request) { r.Self = "a/b" }),
		"long self":      mk(func(r *request) { r.Self += "a" }),
		"bad peer":       mk(func(r *request) { r.Peer = "bob" }),
		"self is peer":   mk(func(r *request) { r.Peer = r.Self }),
		"no ufrag":       mk(func(r *request) { r.Offer.Ufrag = "" }),
		"short pwd":      mk(func(r *request) { r.Offer.Pwd = "x" }),
		"no candidates":  mk(func(r *request) { r.Offer.Candidates = nil }),
		"bad candidate":  mk(func(r *request) { r.Offer.Candidates = []string{"candidate:1 1 udp x"} }),
		"many cands":     mk(func(r *request) { r.Offer.Candidates = make([]string, ice.MaxCandidates+1) }),
		"long candidate": mk(func(r *request) { r.Offer.Candidates = []string{strings.Repeat("1", 1000)} }),
	} {
		if code, msg := postAs(t, url+"/exchange", testKey("a"), []byte(body)); code != http.StatusBadRequest {
			t.Errorf("%s: status %d %s, want 400", name, code, msg)
		}
	}
	if code, _ := postAs(t, url+"/exchange", testKey("a"), bytes.Repeat([]byte(" "), MaxRequestSize+1)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("huge body: status %d, want 413", code)
	}
	if code, _ := post1(t, url+"/other", "application/json", good); code != http.StatusNotFound {
		t.Errorf("wrong path: status %d", code)
	}
	resp, err := http.Get(url + "/exchange")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", resp.StatusCode)
	}
	if code, _ := postAs(t, url+"/exchange", testKey("a"), good); code != http.StatusNoContent {
		t.Errorf("good request: status %d, want 204", code)
	}
	// Asking for oneself is an API mistake, refused before any request.
	c := client(url, "a")
	if _, err := c.Exchange(context.Background(), id("a"), offer("abcd")); !errors.Is(err, post.ErrInvalid) {
		t.Errorf("client with self == peer: %v", err)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestExpiry(t *testing.T) {
	checkGoroutines(t)
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	srv := NewServer(Config{MaxWait: 10 * time.Millisecond, EntryTTL: time.Minute})
	srv.now = clock.now
	url := newServer(t, srv)
	if code, _ := postAs(t, url+"/exchange", testKey("alice"), body("alice", "bob", "aliceUfrag")); code != http.StatusNoContent {
		t.Fatalf("status %d", code)
	}
	if n := srv.Len(); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
	clock.advance(59 * time.Second)
	if n := srv.Len(); n != 1 {
		t.Fatalf("%d entries before the TTL, want 1", n)
	}
	clock.advance(2 * time.Second)
	if n := srv.Len(); n != 0 {
		t.Fatalf("%d entries after the TTL, want 0", n)
	}
	// Bob no longer sees alice's stale offer.
	if code, msg := postAs(t, url+"/exchange", testKey("bob"), body("bob", "alice", "bobUfrag")); code != http.StatusNoContent {
		t.Fatalf("bob after expiry: status %d %s", code, msg)
	}
}

func TestBounds(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{MaxWait: 10 * time.Millisecond, MaxEntries: 2})
	url := newServer(t, srv)
	for i, self := range []string{"a", "b", "c"} {
		want := http.StatusNoContent
		if i == 2 {
			want = http.StatusServiceUnavailable
		}
		if code, msg := postAs(t, url+"/exchange", testKey(self), body(self, "z", "abcd")); code != want {
			t.Errorf("registration %d: status %d %s, want %d", i, code, msg, want)
		}
	}
}

// TestPickupBetweenPolls matches a peer that is not polling at the moment.
func TestPickupBetweenPolls(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{MaxWait: 10 * time.Millisecond})
	url := newServer(t, srv)
	a, b := body("alice", "bob", "aliceUfrag"), body("bob", "alice", "bobUfrag")
	alice, bob := testKey("alice"), testKey("bob")
	if code, _ := postAs(t, url+"/exchange", alice, a); code != http.StatusNoContent {
		t.Fatalf("alice: %d", code)
	}
	code, msg := postAs(t, url+"/exchange", bob, b)
	if code != http.StatusOK || !strings.Contains(msg, "aliceUfrag") {
		t.Fatalf("bob: %d %s", code, msg)
	}
	code, msg = postAs(t, url+"/exchange", alice, a)
	if code != http.StatusOK || !strings.Contains(msg, "bobUfrag") {
		t.Fatalf("alice again: %d %s", code, msg)
	}
	if n := srv.Len(); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

func TestDisplacedAndClose(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{MaxWait: time.Minute})
	url := newServer(t, srv)
	c := client(url, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, id("bob"), offer("aliceUfrag"))
		first <- err
	}()
	for srv.Len() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, id("bob"), offer("aliceUfrag"))
		second <- err
	}()
	if err := <-first; !errors.Is(err, post.ErrPolicyConflict) {
		t.Fatalf("displaced poll: %v", err)
	}
	// Close releases the waiting poll; the client then sees the server
	// refusing and gives up when its context ends.
	srv.Close()
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if _, err := client(url, "bob").Exchange(short, id("alice"), offer("bobUfrag")); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("exchange with a closed server: %v", err)
	}
	cancel()
	if err := <-second; err == nil {
		t.Fatal("poll survived Close")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(body("alice", "bob", "abcd"))
	f.Add([]byte(`{"self":"` + string(id("a")) + `","peer":"` + string(id("b")) + `","offer":{"ufrag":"abcd","pwd":"abcdefghijklmnopqrstuvwxyz","candidates":["candidate:1 1 udp 1694498815 192.0.2.7 40000 typ srflx raddr 10.0.0.2 rport 5000"]}}`))
	f.Add([]byte(`{"self":"a","peer":"b","offer":{"candidates":[null]}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		_, errS := req.Self.Pin()
		_, errP := req.Peer.Pin()
		if errS != nil || errP != nil || req.Self == req.Peer || req.Offer.Validate() != nil {
			t.Fatalf("accepted invalid request %+v", req)
		}
	})
}

func FuzzDecodeAnswer(f *testing.F) {
	good, _ := json.Marshal(response{Offer: offer("abcd")})
	f.Add(good)
	f.Add([]byte(`{"offer":{"ufrag":"abcd","pwd":"abcdefghijklmnopqrstuvwxyz","candidates":["1 1 UDP 1 ::1 1 typ host"],"controlling":true}}`))
	f.Add([]byte(`{"offer":{"ufrag":"abcd","pwd":"abcdefghijklmnopqrstuvwxyz","candidates":["1 1 UDP 1 ::1 1 typ host"],"stacks":["quic","fsp"]}}`))
	f.Add([]byte(`{"offer":{"ufrag":"abcd","pwd":"abcdefghijklmnopqrstuvwxyz","candidates":["1 1 UDP 1 ::1 1 typ host"],"stacks":["","QUIC",null]}}`))
	f.Add([]byte(`{"offer":null}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := decodeAnswer(data)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if o.Validate() != nil {
			t.Fatalf("accepted invalid answer %+v", o)
		}
	})
}

func TestAuthorizeAndUnreachable(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{Authorize: func(r *http.Request, self PeerID) error {
		if self != id("bob") {
			return errors.New("not on the list")
		}
		return nil
	}})
	c := client(newServer(t, srv), "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Exchange(ctx, id("bob"), offer("aliceUfrag")); !errors.Is(err, post.ErrAuthentication) || !strings.Contains(err.Error(), "not on the list") {
		t.Fatalf("unauthorized exchange: %v", err)
	}

	// A server that is not there is reported after a few attempts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	c = client(url, "alice")
	if _, err := c.Exchange(ctx, id("bob"), offer("aliceUfrag")); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("exchange with no server: %v", err)
	}
}

// TestManyPairs exchanges offers for many pairs at once; each peer must get
// exactly its partner's offer.
func TestManyPairs(t *testing.T) {
	checkGoroutines(t)
	// All clients share one source address: lift its limits.
	srv := NewServer(Config{MaxWait: 200 * time.Millisecond, MaxPerSource: 1000, RequestRate: 1e4, RequestBurst: 1000})
	url := newServer(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const pairs = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*pairs)
	for i := range pairs {
		for _, side := range [][2]string{{"a", "b"}, {"b", "a"}} {
			self, peer := fmt.Sprintf("%s%d", side[0], i), fmt.Sprintf("%s%d", side[1], i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				o, err := client(url, self).Exchange(ctx, id(peer), offer(self+"ufrag"))
				if err == nil && o.Ufrag != peer+"ufrag" {
					err = fmt.Errorf("%s got %s's offer", self, o.Ufrag)
				}
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := srv.Len(); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

// TestRestartBeforePickup: bob answers alice, restarts with a new ICE
// session before alice collects the answer; alice gets the newer one.
func TestRestartBeforePickup(t *testing.T) {
	checkGoroutines(t)
	srv := NewServer(Config{MaxWait: 10 * time.Millisecond})
	url := newServer(t, srv)
	a, b1, b2 := body("alice", "bob", "aliceUfrag"), body("bob", "alice", "bobOld"), body("bob", "alice", "bobNew")
	if code, _ := postAs(t, url+"/exchange", testKey("alice"), a); code != http.StatusNoContent {
		t.Fatalf("alice: %d", code)
	}
	for _, b := range [][]byte{b1, b2} {
		if code, msg := postAs(t, url+"/exchange", testKey("bob"), b); code != http.StatusOK || !strings.Contains(msg, "aliceUfrag") {
			t.Fatalf("bob: %d %s", code, msg)
		}
	}
	code, msg := postAs(t, url+"/exchange", testKey("alice"), a)
	if code != http.StatusOK || !strings.Contains(msg, "bobNew") {
		t.Fatalf("alice again: %d %s", code, msg)
	}
}
