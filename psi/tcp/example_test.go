package tcp_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net/netip"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/tcp"
)

func Example() {
	pair := testcert.Must()
	ctx := context.Background()
	var stack tcp.Stack // the zero value frames messages with a length prefix

	ln, err := stack.Listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"),
		&psi.Config{Security: psi.Security{Certificates: []tls.Certificate{pair.Leaf}}})
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	client, err := stack.Dial(ctx, ln.Addr(), &psi.Config{Security: psi.Security{RootCAs: pair.Pool}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	// One message, written in two parts.
	client.WriteMessage(ctx, []byte("hello, "), false, nil)
	client.WriteMessage(ctx, []byte("world"), true, nil)

	buf := make([]byte, 64)
	var msg []byte
	for {
		n, end, err := server.ReadMessage(ctx, buf)
		if err != nil {
			log.Fatal(err)
		}
		msg = append(msg, buf[:n]...)
		if end {
			break
		}
	}
	fmt.Println(string(msg))

	// A fork is a new connection in the same Association, delivered to the
	// server through the parent's AcceptFork.
	fork, err := client.Fork(ctx, psi.Wine)
	if err != nil {
		log.Fatal(err)
	}
	defer fork.Close()
	sfork, err := server.AcceptFork(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer sfork.Close()
	fmt.Println(sfork.Association() == client.Association())
	// Output:
	// hello, world
	// true
}
