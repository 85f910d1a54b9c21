package fsp

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/quic-go/quic-go"
)

// TestShareSocketWithQUIC runs an FSP listener and a QUIC listener on one
// UDP port: FSP claims its datagrams, QUIC gets the rest.
func TestShareSocketWithQUIC(t *testing.T) {
	scfg, ccfg := pair(t)
	stls, ctls := quicConfigs(t)
	pc := mustUDP(t)
	ft := &Transport{Conn: pc}
	defer ft.Close()
	fl, err := ft.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	qt := &quic.Transport{Conn: ft.NonFSPConn()}
	defer qt.Close()
	ql, err := qt.Listen(stls, quicConf)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	addr := pc.LocalAddr().(*net.UDPAddr)

	// QUIC on the shared port.
	go func() {
		c, err := ql.Accept(ctx)
		if err != nil {
			return
		}
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		io.Copy(st, st)
		st.Close()
	}()
	qc, err := quic.DialAddr(ctx, addr.String(), ctls, quicConf)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("over quic"))
	st.Close()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "over quic" {
		t.Fatalf("quic: %q %v", got, err)
	}

	// FSP on the same port.
	acc := make(chan *Conn, 1)
	go func() { s, _ := fl.Accept(context.Background()); acc <- s }()
	c, err := Dial(ctx, addr.AddrPort(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-acc
	go c.SendMessage(ctx, []byte("over fsp"))
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "over fsp" {
		t.Fatalf("fsp: %q %v", m, err)
	}
}
