package fsp

import (
	"bytes"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// transferMid sends total bytes from one end to the other in 64 KiB
// messages, calls mid once when the receiver has half, and checks the
// SHA-256 of what arrived.
func transferMid(t *testing.T, from, to *Conn, total int, mid func()) {
	t.Helper()
	ctx := testContext(t)
	const chunk = 64 << 10
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := randBytes(chunk)
		for sent := 0; sent < total; sent += chunk {
			src[0], src[1], src[2] = byte(sent), byte(sent>>8), byte(sent>>16)
			want.Write(src)
			if err := from.SendMessage(ctx, src); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := sha256.New()
	buf := make([]byte, 32<<10)
	n := 0
	called := false
	for n < total {
		k, _, err := to.ReadMessage(ctx, buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		got.Write(buf[:k])
		n += k
		if !called && n >= total/2 {
			called = true
			mid()
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != total || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("received %d of %d bytes; SHA-256 match %v", n, total, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
}

// relayPair connects a client through a netem relay (a NAT that can
// rebind) to a server.
func relayPair(t *testing.T) (c, s *Conn, r *netem.Relay) {
	t.Helper()
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	r, err := netem.NewRelay(addrOf(l), netem.Config{}, netem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ctx := testContext(t)
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err = Dial(ctx, r.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	s = <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s, r
}

// TestRebindMidTransfer rebinds the client's NAT mapping halfway through
// bulk transfers in both directions: the server validates the new address
// and the data arrives intact.
func TestRebindMidTransfer(t *testing.T) {
	for _, dir := range []string{"server-to-client", "client-to-server"} {
		t.Run(dir, func(t *testing.T) {
			c, s, r := relayPair(t)
			before := s.RemoteAddr().String()
			from, to := s, c
			if dir == "client-to-server" {
				from, to = c, s
			}
			transferMid(t, from, to, 16<<20, r.Rebind)
			after := s.RemoteAddr().String()
			if after == before {
				t.Fatal("the server did not move to the client's new address")
			}
			validated := 0
			for _, p := range s.Paths() {
				if p.Validated {
					validated++
				}
			}
			if validated < 2 {
				t.Fatalf("paths %+v", s.Paths())
			}
			t.Logf("server followed %s -> %s; paths %+v", before, after, s.Paths())
		})
	}
}

// TestForgedAddressDoesNotMove steals a fresh packet of the client and
// injects it from another socket before the client sends anything else,
// as an on-path attacker racing the real packet from a forged address.
// The server authenticates it but only challenges the new address, within
// the amplification limit, and keeps sending to the real client.
func TestForgedAddressDoesNotMove(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	h := &recConn{PacketConn: mustUDP(t)}
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	ctx := testContext(t)
	c, s := dialAccept(t, ctx, tr, l, ccfg)
	t.Cleanup(func() { c.Close(); s.Close() })
	real := s.RemoteAddr().String()

	forged := mustUDP(t)
	defer forged.Close()
	var (
		once     sync.Once
		injected = make(chan struct{})
		fromSent int
	)
	h.mu.Lock()
	h.drop = func(b []byte) bool {
		var p wire.Packet
		if wire.Parse(b, &p) != nil || p.Opcode != wire.PureData || p.Src != c.LocalALFID() || p.Seq < 100 {
			return false
		}
		stolen := false
		once.Do(func() {
			stolen = true
			// The attacker's copy reaches the server first; the client's
			// own packet is lost. Nothing else leaves the client meanwhile.
			n, _ := forged.WriteTo(b, l.Addr())
			fromSent = n
			close(injected)
		})
		return stolen
	}
	h.mu.Unlock()

	transferMid(t, c, s, 8<<20, func() {})
	<-injected
	if got := s.RemoteAddr().String(); got != real {
		t.Fatalf("the server moved to %s", got)
	}
	// The server still reaches the real client.
	transferMid(t, s, c, 4<<20, func() {})
	var forgedPath *PathInfo
	for _, p := range s.Paths() {
		if p.Remote.String() == forged.LocalAddr().String() {
			forgedPath = &p
		} else if !p.Validated || !p.Active {
			t.Fatalf("real path %+v", p)
		}
	}
	if forgedPath == nil || forgedPath.Validated || forgedPath.Active {
		t.Fatalf("forged path %+v in %+v", forgedPath, s.Paths())
	}
	// What the server sent to the forged address: challenges only, at
	// most three times what came from there.
	forged.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	total := 0
	buf := make([]byte, 2048)
	for {
		n, _, err := forged.ReadFrom(buf)
		if err != nil {
			break
		}
		var p wire.Packet
		if wire.Parse(buf[:n], &p) != nil || p.Opcode != wire.KeepAlive || !p.HasChallenge {
			t.Fatalf("the forged address got a %v packet", p.Opcode)
		}
		total += n
	}
	if total > 3*fromSent {
		t.Fatalf("sent %d bytes to the forged address, which sent %d", total, fromSent)
	}
	t.Logf("forged address sent %d bytes, got %d (challenges); connection stayed on %s", fromSent, total, real)
}
