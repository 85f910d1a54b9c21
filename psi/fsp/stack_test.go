package fsp

import (
	"bytes"
	"testing"

	"github.com/postsockets/postsockets/psi"
)

func TestStack(t *testing.T) {
	scfg, ccfg := pair(t)
	var st Stack
	ctx := testContext(t)
	l, err := st.Listen(ctx, loopback, &psi.Config{Security: scfg.Security})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan psi.Transient, 1)
	go func() { tr, _ := l.Accept(ctx); acc <- tr }()
	assoc := [16]byte{1, 2, 3}
	c, err := st.Dial(ctx, l.Addr(), &psi.Config{Security: ccfg.Security, Association: assoc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Stack() != "fsp" || !c.Features().Has(psi.Reliable|psi.MessageBoundaries|psi.Encrypted) {
		t.Fatal("features")
	}
	acked := make(chan struct{})
	msg := randBytes(50000)
	if err := c.WriteMessage(ctx, msg[:1000], false, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(ctx, msg[1000:], true, &psi.WriteOptions{Acked: func() { close(acked) }}); err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept")
	}
	defer s.Close()
	if s.Association() != assoc {
		t.Fatal("association not carried")
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, end, err := s.ReadMessage(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		if end {
			break
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("message mismatch")
	}
	select {
	case <-acked:
	case <-ctx.Done():
		t.Fatal("Acked never called")
	}
	if p := c.Path(); p.Remote != l.Addr() || p.RTT <= 0 {
		t.Fatalf("path %+v", p)
	}
	if !c.Features().Has(psi.MilkClones) {
		t.Fatal("no milk clones")
	}
	f, err := c.Fork(ctx, psi.Wine)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.WriteMessage(ctx, []byte("fork"), true, nil); err != nil {
		t.Fatal(err)
	}
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if n, end, err := sf.ReadMessage(ctx, buf); err != nil || !end || string(buf[:n]) != "fork" {
		t.Fatalf("fork read: %q %v %v", buf[:n], end, err)
	}
}
