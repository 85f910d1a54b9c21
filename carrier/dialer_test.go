package carrier_test

import (
	"testing"

	"github.com/postsockets/postsockets/carrier"
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
