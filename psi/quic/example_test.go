package quic_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/quic"
)

// A message on the root stream, one on a fork, and one as a datagram.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pair := testcert.Must()
	var st quic.Stack

	l, err := st.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"),
		&psi.Config{Security: psi.Security{Certificates: []tls.Certificate{pair.Leaf}}})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	c, err := st.Dial(ctx, l.Addr(),
		&psi.Config{Security: psi.Security{RootCAs: pair.Pool, ServerName: "localhost"}})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	s, err := l.Accept(ctx)
	if err != nil {
		panic(err)
	}
	defer s.Close()

	read := func(t psi.Transient) string {
		buf := make([]byte, 64)
		n, _, err := t.ReadMessage(ctx, buf)
		if err != nil {
			panic(err)
		}
		return string(buf[:n])
	}

	c.WriteMessage(ctx, []byte("hello"), true, nil)
	fmt.Println(read(s))

	f, _ := c.Fork(ctx, psi.Wine)
	defer f.Close()
	f.WriteMessage(ctx, []byte("on a fork"), true, nil)
	sf, _ := s.AcceptFork(ctx)
	defer sf.Close()
	fmt.Println(read(sf))

	c.WriteMessage(ctx, []byte("as a datagram"), true, &psi.WriteOptions{
		Properties: &post.Properties{Lifetime: time.Second, Unreliable: true}})
	fmt.Println(read(s), s.(*quic.Transient).Stats().DatagramsReceived)
	// Output:
	// hello
	// on a fork
	// as a datagram 1
}
