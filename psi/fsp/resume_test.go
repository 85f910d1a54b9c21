package fsp

import (
	"bytes"
	"crypto/tls"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
)

// waitTicket waits until cache holds a ticket for the listener at key.
func waitTicket(t testing.TB, cache tls.ClientSessionCache, c *Conn) {
	t.Helper()
	key := c.ticketCacheKey()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if cs, ok := cache.Get(key); ok && cs != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no resumption ticket within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// pingPong sends a message each way.
func pingPong(t testing.TB, a, b *Conn) {
	t.Helper()
	ctx := testContext(t)
	msg := []byte("hello over a resumed session")
	if err := a.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	got, err := b.ReceiveMessage(ctx)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := b.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if got, err = a.ReceiveMessage(ctx); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestResumption(t *testing.T) {
	srv, cli := testcert.Must(), testcert.Must()
	scfg := &Config{Security: psi.Security{Certificates: []tls.Certificate{srv.Leaf}, ClientAuth: true, RootCAs: cli.Pool}}
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := &Config{Security: psi.Security{RootCAs: srv.Pool, ServerName: "localhost",
		Certificates: []tls.Certificate{cli.Leaf}, SessionCache: cache}}
	l := listen(t, scfg)

	c1, s1 := connect(t, l, ccfg)
	if c1.Resumed() || s1.Resumed() {
		t.Fatal("first connection reports resumption")
	}
	pingPong(t, c1, s1)
	waitTicket(t, cache, c1)
	c1.Close()

	c2, s2 := connect(t, l, ccfg)
	if !c2.Resumed() || !s2.Resumed() {
		t.Fatalf("second connection not resumed: client %v, server %v", c2.Resumed(), s2.Resumed())
	}
	pingPong(t, c2, s2)
	// Identities survive resumption.
	if pc := c2.PeerCertificates(); len(pc) == 0 || !pc[0].Equal(srv.Leaf.Leaf) {
		t.Fatal("resumed client lost the server's identity")
	}
	if pc := s2.PeerCertificates(); len(pc) == 0 || !pc[0].Equal(cli.Leaf.Leaf) {
		t.Fatal("resumed server lost the client's identity")
	}
	// A ticket is single-use, and the resumed session issues the next.
	waitTicket(t, cache, c2)
	c3, s3 := connect(t, l, ccfg)
	if !c3.Resumed() {
		t.Fatal("third connection not resumed")
	}
	pingPong(t, c3, s3)
}
