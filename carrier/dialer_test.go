package carrier_test

import (
	"testing"

	"github.com/postsockets/postsockets/carrier"
	"github.com/postsockets/postsockets/internal/assoccache"
)

// TestDialerReusesAssociation: a second dial to the same address runs on
// the first one's Association and its cached race winner.
func TestDialerReusesAssociation(t *testing.T) {
	l := listen(t, serverConfig())
	dial := carrier.Dialer(clientConfig())
	addr := l.Remote("localhost").Name
	var conns []*carrier.Conn
	for range 2 {
		c, err := dial(ctxT(t), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c.(*carrier.Conn))
	}
	a, b := conns[0].Carrier().Association(), conns[1].Carrier().Association()
	if a != b {
		t.Fatal("the second dial made a new Association")
	}
	if w, ok := a.Winner(); !ok || w.Stack != conns[1].Carrier().Stack() {
		t.Fatalf("winner %+v %v, second carrier on %s", w, ok, conns[1].Carrier().Stack())
	}
}

// TestDialerBounded: the Dialer keeps the Associations of the addresses
// dialled most recently, at most its cache's bound, rather than one for
// every address it ever dialled (a proxy dialling ever new addresses grew
// by about 5 KiB an address).
func TestDialerBounded(t *testing.T) {
	cache := &assoccache.Cache{Max: 2}
	dial := carrier.DialerWithCache(clientConfig(), cache)
	var addrs []string
	for range 3 {
		addrs = append(addrs, listen(t, serverConfig()).Remote("localhost").Name)
	}
	for _, addr := range append(addrs, addrs[2]) {
		c, err := dial(ctxT(t), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if n := cache.Len(); n != 2 {
		t.Fatalf("the Dialer keeps %d Associations, want 2", n)
	}
	if cache.Get(addrs[0]) != nil || cache.Get(addrs[2]) == nil {
		t.Fatal("the Dialer forgot a recent address before the oldest")
	}
}
