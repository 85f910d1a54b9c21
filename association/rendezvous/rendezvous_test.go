package rendezvous

import (
	"bytes"
	"context"
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
	srv := &Server{MaxWait: time.Second}
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
		sb, errB = Connect(ctx, ConnectConfig{Self: "bob", Peer: "alice", RendezvousURL: url, ICE: cfgB})
	}()
	sa, errA := Connect(ctx, ConnectConfig{Self: "alice", Peer: "bob", RendezvousURL: url, ICE: cfgA})
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
	url := newServer(t, &Server{MaxWait: 200 * time.Millisecond})
	sa, sb := connectBoth(t, ctx, url, loopbackICE(), loopbackICE())

	if !sa.Controlling || sb.Controlling {
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
	srv := &Server{MaxWait: 50 * time.Millisecond}
	c := &Client{URL: newServer(t, srv)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type result struct {
		o   Offer
		err error
	}
	alice := make(chan result, 1)
	go func() {
		o, err := c.Exchange(ctx, "alice", "bob", offer("aliceUfrag"))
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
		o, err := c.Exchange(short, names[0], names[1], offer(names[0]+"Ufrag"))
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
	o, err := c.Exchange(ctx, "bob", "alice", offer("bobUfrag"))
	if err != nil || o.Ufrag != "aliceUfrag" || !o.Controlling {
		t.Fatalf("bob got %+v, %v", o, err)
	}
	r := <-alice
	if r.err != nil || r.o.Ufrag != "bobUfrag" || r.o.Controlling {
		t.Fatalf("alice got %+v, %v", r.o, r.err)
	}
	// Only mallory's and bob's unanswered registrations remain.
	if n := srv.Len(); n != 2 {
		t.Errorf("%d entries left after the exchange, want 2", n)
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
	srv := &Server{MaxWait: 10 * time.Millisecond}
	url := newServer(t, srv)
	good, _ := json.Marshal(request{Self: "a", Peer: "b", Offer: offer("abcd")})
	mk := func(f func(*request)) string {
		r := request{Self: "a", Peer: "b", Offer: offer("abcd")}
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
		"long self":      mk(func(r *request) { r.Self = strings.Repeat("a", MaxIDLength+1) }),
		"self is peer":   mk(func(r *request) { r.Peer = r.Self }),
		"no ufrag":       mk(func(r *request) { r.Offer.Ufrag = "" }),
		"short pwd":      mk(func(r *request) { r.Offer.Pwd = "x" }),
		"no candidates":  mk(func(r *request) { r.Offer.Candidates = nil }),
		"bad candidate":  mk(func(r *request) { r.Offer.Candidates = []string{"candidate:1 1 udp x"} }),
		"many cands":     mk(func(r *request) { r.Offer.Candidates = make([]string, ice.MaxCandidates+1) }),
		"long candidate": mk(func(r *request) { r.Offer.Candidates = []string{strings.Repeat("1", 1000)} }),
	} {
		if code, msg := post1(t, url+"/exchange", "application/json", []byte(body)); code != http.StatusBadRequest {
			t.Errorf("%s: status %d %s, want 400", name, code, msg)
		}
	}
	if code, _ := post1(t, url+"/exchange", "application/json", bytes.Repeat([]byte(" "), MaxRequestSize+1)); code != http.StatusRequestEntityTooLarge {
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
	if code, _ := post1(t, url+"/exchange", "application/json", good); code != http.StatusNoContent {
		t.Errorf("good request: status %d, want 204", code)
	}
	// The client reports 400 as post.ErrMalformed without retrying.
	c := &Client{URL: url}
	if _, err := c.Exchange(context.Background(), "a", "a", offer("abcd")); !errors.Is(err, post.ErrMalformed) {
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
	srv := &Server{MaxWait: 10 * time.Millisecond, EntryTTL: time.Minute, now: clock.now}
	url := newServer(t, srv)
	body, _ := json.Marshal(request{Self: "alice", Peer: "bob", Offer: offer("aliceUfrag")})
	if code, _ := post1(t, url+"/exchange", "application/json", body); code != http.StatusNoContent {
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
	body, _ = json.Marshal(request{Self: "bob", Peer: "alice", Offer: offer("bobUfrag")})
	if code, msg := post1(t, url+"/exchange", "application/json", body); code != http.StatusNoContent {
		t.Fatalf("bob after expiry: status %d %s", code, msg)
	}
}

func TestBounds(t *testing.T) {
	checkGoroutines(t)
	srv := &Server{MaxWait: 10 * time.Millisecond, MaxEntries: 2}
	url := newServer(t, srv)
	for i, self := range []string{"a", "b", "c"} {
		body, _ := json.Marshal(request{Self: self, Peer: "z", Offer: offer("abcd")})
		want := http.StatusNoContent
		if i == 2 {
			want = http.StatusServiceUnavailable
		}
		if code, msg := post1(t, url+"/exchange", "application/json", body); code != want {
			t.Errorf("registration %d: status %d %s, want %d", i, code, msg, want)
		}
	}
}

// TestPickupBetweenPolls matches a peer that is not polling at the moment.
func TestPickupBetweenPolls(t *testing.T) {
	checkGoroutines(t)
	srv := &Server{MaxWait: 10 * time.Millisecond}
	url := newServer(t, srv)
	a, _ := json.Marshal(request{Self: "alice", Peer: "bob", Offer: offer("aliceUfrag")})
	b, _ := json.Marshal(request{Self: "bob", Peer: "alice", Offer: offer("bobUfrag")})
	if code, _ := post1(t, url+"/exchange", "application/json", a); code != http.StatusNoContent {
		t.Fatalf("alice: %d", code)
	}
	code, msg := post1(t, url+"/exchange", "application/json", b)
	if code != http.StatusOK || !strings.Contains(msg, "aliceUfrag") {
		t.Fatalf("bob: %d %s", code, msg)
	}
	code, msg = post1(t, url+"/exchange", "application/json", a)
	if code != http.StatusOK || !strings.Contains(msg, "bobUfrag") {
		t.Fatalf("alice again: %d %s", code, msg)
	}
	if n := srv.Len(); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

func TestDisplacedAndClose(t *testing.T) {
	checkGoroutines(t)
	srv := &Server{MaxWait: time.Minute}
	c := &Client{URL: newServer(t, srv)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, "alice", "bob", offer("aliceUfrag"))
		first <- err
	}()
	for srv.Len() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, "alice", "bob", offer("aliceUfrag"))
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
	if _, err := c.Exchange(short, "bob", "alice", offer("bobUfrag")); !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("exchange with a closed server: %v", err)
	}
	cancel()
	if err := <-second; err == nil {
		t.Fatal("poll survived Close")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	good, _ := json.Marshal(request{Self: "alice", Peer: "bob", Offer: offer("abcd")})
	f.Add(good)
	f.Add([]byte(`{"self":"a","peer":"b","offer":{"ufrag":"abcd","pwd":"abcdefghijklmnopqrstuvwxyz","candidates":["candidate:1 1 udp 1694498815 192.0.2.7 40000 typ srflx raddr 10.0.0.2 rport 5000"]}}`))
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
		if !ValidID(req.Self) || !ValidID(req.Peer) || req.Self == req.Peer || req.Offer.Validate() != nil {
			t.Fatalf("accepted invalid request %+v", req)
		}
	})
}

func FuzzDecodeAnswer(f *testing.F) {
	good, _ := json.Marshal(response{Offer: offer("abcd")})
	f.Add(good)
	f.Add([]byte(`{"offer":{"ufrag":"abcd","pwd":"abcdefghijklmnopqrstuvwxyz","candidates":["1 1 UDP 1 ::1 1 typ host"],"controlling":true}}`))
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
	srv := &Server{Authorize: func(r *http.Request, self string) error {
		if r.Header.Get("Authorization") != "Bearer "+self {
			return errors.New("bad token")
		}
		return nil
	}}
	c := &Client{URL: newServer(t, srv)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Exchange(ctx, "alice", "bob", offer("aliceUfrag")); !errors.Is(err, post.ErrRefused) || !strings.Contains(err.Error(), "bad token") {
		t.Fatalf("unauthorized exchange: %v", err)
	}

	// A server that is not there is reported after a few attempts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	c = &Client{URL: url}
	if _, err := c.Exchange(ctx, "alice", "bob", offer("aliceUfrag")); !errors.Is(err, post.ErrRefused) {
		t.Fatalf("exchange with no server: %v", err)
	}
}

// TestManyPairs exchanges offers for many pairs at once; each peer must get
// exactly its partner's offer.
func TestManyPairs(t *testing.T) {
	checkGoroutines(t)
	srv := &Server{MaxWait: 200 * time.Millisecond}
	c := &Client{URL: newServer(t, srv)}
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
				o, err := c.Exchange(ctx, self, peer, offer(self+"ufrag"))
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
	srv := &Server{MaxWait: 10 * time.Millisecond}
	url := newServer(t, srv)
	a, _ := json.Marshal(request{Self: "alice", Peer: "bob", Offer: offer("aliceUfrag")})
	b1, _ := json.Marshal(request{Self: "bob", Peer: "alice", Offer: offer("bobOld")})
	b2, _ := json.Marshal(request{Self: "bob", Peer: "alice", Offer: offer("bobNew")})
	if code, _ := post1(t, url+"/exchange", "application/json", a); code != http.StatusNoContent {
		t.Fatalf("alice: %d", code)
	}
	for _, b := range [][]byte{b1, b2} {
		if code, msg := post1(t, url+"/exchange", "application/json", b); code != http.StatusOK || !strings.Contains(msg, "aliceUfrag") {
			t.Fatalf("bob: %d %s", code, msg)
		}
	}
	code, msg := post1(t, url+"/exchange", "application/json", a)
	if code != http.StatusOK || !strings.Contains(msg, "bobNew") {
		t.Fatalf("alice again: %d %s", code, msg)
	}
}
