package netem

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/testcert"
	"github.com/quic-go/quic-go"
)

// TestQUICOverImpairedConn hands PacketConns to quic-go and moves data
// across a lossy, delayed, reordering path in both directions.
func TestQUICOverImpairedConn(t *testing.T) {
	checkLeaks(t)
	size := 512 << 10
	if testing.Short() {
		size = 128 << 10
	}
	path := Config{Loss: 0.02, Delay: 5 * time.Millisecond, Jitter: 2 * time.Millisecond, Reorder: 0.02, Duplicate: 0.01, Seed: 11}
	certs := testcert.Must()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	srvConn := NewDuplex(listenUDP(t), path, Config{Loss: 0.01, Seed: 12})
	defer srvConn.Close() // quic-go leaves a Conn it was given open
	srv := &quic.Transport{Conn: srvConn}
	defer srv.Close()
	ln, err := srv.Listen(&tls.Config{Certificates: []tls.Certificate{certs.Leaf}, NextProtos: []string{"netem"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	serverDone := make(chan struct{})
	defer func() { cancel(); <-serverDone }()
	go func() {
		defer close(serverDone)
		conn, err := ln.Accept(ctx)
		if err != nil {
			serverErr <- err
			return
		}
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			serverErr <- err
			return
		}
		_, err = io.Copy(s, s) // echo
		s.Close()
		serverErr <- err
		<-ctx.Done()
		conn.CloseWithError(0, "")
	}()

	cliConn := New(listenUDP(t), path)
	defer cliConn.Close()
	cli := &quic.Transport{Conn: cliConn}
	defer cli.Close()
	conn, err := cli.Dial(ctx, srvConn.LocalAddr(), &tls.Config{RootCAs: certs.Pool, ServerName: "localhost", NextProtos: []string{"netem"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go func() { s.Write(msg); s.Close() }()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echoed %d bytes, want %d identical", len(got), len(msg))
	}
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
	cancel()
	st := cliConn.Stats()
	if st.Dropped == 0 {
		t.Fatalf("no loss injected: %+v", st)
	}
	t.Logf("client out %+v", st)
	t.Logf("server out %+v", srvConn.Stats())
	var _ net.PacketConn = srvConn
}
