// Command postsockets tries Post Sockets from a shell: nc, curl and
// iperf3 habits over FSP, QUIC, TCP+TLS or the race between them.
//
//	go install github.com/postsockets/postsockets/cmd/postsockets@latest
//
//	postsockets listen [flags] ADDR          print every message received
//	postsockets recv   [flags] ADDR          receive one file; -o FILE
//	postsockets send   [flags] ADDR FILE|-   send a file as one message
//	postsockets cat    [flags] [-l] ADDR     an nc for messages: a line is a message
//	postsockets bench  [flags] [ADDR]        throughput, RTT and loss; no ADDR
//	                                         runs its own server on loopback
//	postsockets bench -l [flags] ADDR        the server side of bench
//	postsockets rendezvous [flags] ADDR      a rendezvous server for p2p
//	postsockets p2p -rendezvous URL -peer ID a chat with a peer through NATs
//
// Every run prints the stack that won, the path and the round-trip time;
// -json prints one JSON object per line instead. Trust is never built in:
// a listener without -psk or -cert makes a key for the run and prints the
// -pin the other side needs; -psk FILE makes FILE with a new key when it
// does not exist, to copy to the other side. A listener given -pin or -ca
// requires a client certificate (-cert, -key) that they accept.
//
// recv and cat -l take one peer and then stop listening: whoever dials
// after it is refused. Without -pin, -ca or -psk the one peer is whoever
// dials first.
//
// cat closes the Carrier when its input ends, as nc -N does; Post
// Sockets has no half-close, so what the peer sends after that is
// dropped. Input that ends before its first line (< /dev/null, a
// background job) sends nothing: cat then only receives, printing every
// message until the peer hangs up (or an interrupt), like nc -l > FILE.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: postsockets COMMAND [flags] ...

commands:
  listen ADDR            print every message received (-echo sends it back)
  recv ADDR              receive one file and print its SHA-256 (-o FILE)
  send ADDR FILE|-       send a file as one message
  cat [-l] ADDR          an nc for messages: each line is a message
  bench [ADDR]           throughput, RTT and loss (no ADDR: a loopback server)
  bench -l ADDR          the server side of bench
  rendezvous ADDR        a rendezvous server for p2p
  p2p -rendezvous URL -peer ID   chat with a peer through NATs

Run "postsockets COMMAND -h" for a command's flags.`)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	cmds := map[string]func(context.Context, []string) error{
		"listen": cmdListen, "recv": cmdRecv, "send": cmdSend, "cat": cmdCat,
		"bench": cmdBench, "rendezvous": cmdRendezvous, "p2p": cmdP2P,
	}
	f, ok := cmds[args[0]]
	if !ok {
		usage()
		return 2
	}
	err := f(ctx, args[1:])
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "postsockets %s: %v\n", args[0], err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "postsockets %s: %v\n", args[0], err)
	return 1
}

// usageError is a bad command line.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }
