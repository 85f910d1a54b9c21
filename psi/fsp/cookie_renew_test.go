package fsp

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// TestExpiredCookieRenewed: a CONNECT_REQUEST that reaches the listener
// only after its cookie expired, as when a listener is too busy to get to
// it within the cookie's lifetime (TestManyDials on a loaded host), gets
// a fresh cookie, and the dial completes. The listener dropped it
// silently before, and the client repeated its dead cookie until the dial
// timed out.
func TestExpiredCookieRenewed(t *testing.T) {
	scfg, ccfg := pair(t)
	const life = time.Second
	lt := &Transport{Conn: mustUDP(t), cookieLife: life}
	t.Cleanup(func() { lt.Close() })
	l, err := lt.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	// The client's CONNECT_REQUESTs are lost until its first cookie is
	// older than its lifetime.
	var (
		mu      sync.Mutex
		first   time.Time
		cookies = map[string]bool{} // those CONNECT_REQUESTs carried
	)
	raw := mustUDP(t)
	hc := &hookConn{PacketConn: raw, onWrite: func(b []byte, send func([]byte)) {
		var p wire.Packet
		if wire.Parse(b, &p) == nil && p.Opcode == wire.ConnectRequest {
			mu.Lock()
			if first.IsZero() {
				first = time.Now()
			}
			lost := time.Since(first) < life+life/2
			cookies[string(p.Payload[:fcrypto.CookieLen])] = true
			mu.Unlock()
			if lost {
				return
			}
		}
		send(b)
	}}
	tr := &Transport{Conn: hc}
	t.Cleanup(func() { tr.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, tr, l, ccfg)
	t.Cleanup(func() { c.Close(); s.Close() })
	mu.Lock()
	n := len(cookies)
	mu.Unlock()
	if n < 2 {
		t.Fatalf("the dial went through with %d cookie", n)
	}
}

// TestCookieRenewalBounded dials a raw socket playing a listener that
// answers every CONNECT_REQUEST with a new cookie. As a renewal (the
// stale cookie echoed) the client takes each, but sends at once at most
// once per hsMaxRTO, so the two make no ping-pong of it, and its
// retransmissions keep their backoff. Without the stale cookie (as a late
// answer to a repeated INIT_CONNECT) the client keeps its cookie.
func TestCookieRenewalBounded(t *testing.T) {
	for _, renew := range []bool{true, false} {
		t.Run(fmt.Sprintf("renewal=%v", renew), func(t *testing.T) {
			t.Parallel()
			requests, cookies := fakeCookieListener(t, renew, 3*time.Second)
			// The backoff's 4 or 5 (250 ms doubled, up to 2 s), and as
			// renewals 1 or 2 sent at once.
			t.Logf("%d CONNECT_REQUESTs in 3 s, %d cookies", requests, cookies)
			switch {
			case requests < 2 || requests > 10:
				t.Fatalf("%d CONNECT_REQUESTs", requests)
			case renew && cookies < 2:
				t.Fatal("the client kept its first cookie")
			case !renew && cookies != 1:
				t.Fatalf("the client took %d cookies that were no renewal", cookies)
			}
		})
	}
}

// fakeCookieListener dials a raw socket that answers INIT_CONNECT with a
// cookie and each CONNECT_REQUEST with a new one (renew: with the stale
// one echoed) until the dial times out after wait. It returns the
// CONNECT_REQUESTs and the distinct cookies they carried.
func fakeCookieListener(t *testing.T, renew bool, wait time.Duration) (requests, cookies int) {
	srv := mustUDP(t)
	_, ccfg := pair(t)
	ccfg.HandshakeTimeout = wait
	errc := make(chan error, 1)
	go func() {
		c, err := Dial(testContext(t), srv.LocalAddr().(*net.UDPAddr).AddrPort(), ccfg)
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	buf := make([]byte, maxHandshakeSize)
	seen := map[string]bool{}
	srv.SetReadDeadline(time.Now().Add(wait + time.Second))
	for {
		n, from, err := srv.ReadFrom(buf)
		if err != nil {
			break
		}
		var pkt wire.Packet
		if wire.Parse(buf[:n], &pkt) != nil || pkt.Opcode != wire.InitConnect && pkt.Opcode != wire.ConnectRequest {
			continue
		}
		body := randBytes(fcrypto.CookieLen)
		if pkt.Opcode == wire.ConnectRequest {
			requests++
			stale := pkt.Payload[:fcrypto.CookieLen]
			seen[string(stale)] = true
			if renew {
				body = append(body, stale...)
			}
		}
		p := wire.Packet{Header: wire.Header{Opcode: wire.AckInitConnect, Dst: pkt.Src}}
		srv.WriteTo(handshakePacket(nil, fcrypto.HandshakeKey(nil, pkt.Src), &p, body), from)
	}
	if err := <-errc; !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("dial: %v, want a timeout", err)
	}
	return requests, len(seen)
}
