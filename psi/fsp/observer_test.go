package fsp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
)

// observer is the attacker of RFC 9000 §9.3.3: it sees every datagram the
// client sends and, once on, resends a copy to the server from its own
// address, faster than the client's own path. What the server sends to
// that address it forwards to the client only if small (challenges,
// acknowledgements), so the address validates while data sent there
// vanishes.
type observer struct {
	conn   *net.UDPConn // the attacker's own address
	server net.Addr
	client atomic.Pointer[net.UDPAddr]
	on     atomic.Bool
	copies atomic.Int64
}

func newObserver(t *testing.T, server net.Addr) *observer {
	o := &observer{conn: mustUDP(t), server: server}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := o.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if to := o.client.Load(); to != nil && n < 200 && from.String() == server.String() {
				o.conn.WriteTo(buf[:n], to)
			}
		}
	}()
	return o
}

// tap is the client's socket hook: every datagram goes out as usual and,
// while the attack is on, a copy leaves at once from the observer.
func (o *observer) tap(b []byte, send func([]byte)) {
	if o.on.Load() {
		o.conn.WriteTo(b, o.server)
		o.copies.Add(1)
	}
	send(b)
}

// TestObserverAttack runs the observer attack in the middle of a
// server-to-client transfer over a relay with 20 ms of delay each way.
// The server validates the observer's address, but it also probes the
// client's old path, which answers, so it stays on (or returns to) the
// old path: data stops for at most about one round trip plus one
// retransmission timeout, and the transfer completes intact.
func TestObserverAttack(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	delay := netem.Config{Delay: 20 * time.Millisecond}
	r, err := netem.NewRelay(addrOf(l), delay, delay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	o := newObserver(t, l.Addr())
	raw := mustUDP(t)
	o.client.Store(raw.LocalAddr().(*net.UDPAddr))
	tr := &Transport{Conn: &hookConn{PacketConn: raw, onWrite: o.tap}}
	t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(r.Addr()), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	genuine := s.RemoteAddr().String()

	const total, chunk = 8 << 20, 64 << 10
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := randBytes(chunk)
		for sent := 0; sent < total; sent += chunk {
			src[0], src[1], src[2] = byte(sent), byte(sent>>8), byte(sent>>16)
			want.Write(src)
			if err := s.SendMessage(ctx, src); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := sha256.New()
	buf := make([]byte, 32<<10)
	var stall time.Duration
	var attackAt time.Time
	last := time.Now()
	for n := 0; n < total; {
		k, _, err := c.ReadMessage(ctx, buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		now := time.Now()
		if !attackAt.IsZero() {
			stall = max(stall, now.Sub(last))
		}
		last = now
		got.Write(buf[:k])
		n += k
		if attackAt.IsZero() && n >= total/4 {
			attackAt = now
			o.on.Store(true)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("data corrupted")
	}
	srtt, rttvar := s.RTT()
	rto := srtt + max(4*rttvar, time.Millisecond) + maxAckDelay
	paths := s.Paths()
	t.Logf("observer sent %d copies; longest stall %v (srtt %v, rto ~%v); server paths %+v", o.copies.Load(), stall, srtt, rto, paths)
	if o.copies.Load() == 0 {
		t.Fatal("the attack never ran")
	}
	if now := s.RemoteAddr().String(); now != genuine {
		t.Fatalf("the server sends to %s, not the client's path %s", now, genuine)
	}
	// Contract: about one round trip plus one retransmission timeout,
	// with room for a loaded machine.
	if stall > time.Second {
		t.Fatalf("data stopped for %v", stall)
	}
}
