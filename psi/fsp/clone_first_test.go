package fsp

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// recConn is a client socket that records every datagram it sends and
// can drop them by a predicate.
type recConn struct {
	net.PacketConn
	mu   sync.Mutex
	sent [][]byte
	drop func(b []byte) bool
}

func (h *recConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	h.mu.Lock()
	h.sent = append(h.sent, append([]byte(nil), b...))
	drop := h.drop != nil && h.drop(b)
	h.mu.Unlock()
	if drop {
		return len(b), nil
	}
	return h.PacketConn.WriteTo(b, addr)
}

// packetsFrom returns the recorded datagrams whose source ALFID is src.
func (h *recConn) packetsFrom(src uint32) []wire.Packet {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []wire.Packet
	for _, b := range h.sent {
		var p wire.Packet
		if wire.Parse(b, &p) == nil && p.Src == src {
			p.SNACK.Gaps = nil
			out = append(out, p)
		}
	}
	return out
}

// TestCloneFirstPacket shows that the first message written on a fresh
// clone travels in the clone's very first packet, a MULTIPLY, and that
// this one packet is enough for the peer's AcceptFork to return the clone
// with the message: every later packet of the clone is dropped until the
// peer has read it.
func TestCloneFirstPacket(t *testing.T) {
	scfg, ccfg := pair(t)
	ccfg.forkAnnounce = time.Hour // no empty announcement can overtake the data
	l := listen(t, scfg)
	h := &recConn{PacketConn: mustUDP(t)}
	tr := &Transport{Conn: h}
	t.Cleanup(func() { tr.Close(); h.Close() })
	ctx := testContext(t)
	acc := make(chan *Conn, 1)
	go func() { s, _ := l.Accept(ctx); acc <- s }()
	c, err := tr.Dial(ctx, l.Addr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()

	f, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := f.LocalALFID()
	var mu sync.Mutex
	first := true
	h.mu.Lock()
	h.drop = func(b []byte) bool {
		var p wire.Packet
		if wire.Parse(b, &p) != nil || p.Src != id {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if first {
			first = false
			return false
		}
		return true // everything after the clone's first packet
	}
	h.mu.Unlock()
	if n := len(h.packetsFrom(id)); n != 0 {
		t.Fatalf("the clone sent %d packets before any data was written", n)
	}
	msg := []byte("first message on a fresh clone")
	if err := f.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	sf, err := s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	got, err := sf.ReceiveMessage(ctx)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("peer clone read %q, %v", got, err)
	}
	pkts := h.packetsFrom(id)
	if len(pkts) == 0 {
		t.Fatal("no packet of the clone recorded")
	}
	p := pkts[0]
	if p.Opcode != wire.Multiply || p.Flags&wire.FlagEOT == 0 || p.Seq != 1 {
		t.Fatalf("first clone packet: %v flags %#x seq %d", p.Opcode, p.Flags, p.Seq)
	}
	if n := len(p.Payload) - overhead + wire.HeaderLen; n != len(msg) {
		t.Fatalf("first clone packet carries %d message bytes, want %d", n, len(msg))
	}
	if p.Dst != c.LocalALFID() && p.Dst != c.RemoteALFID() {
		t.Fatalf("first clone packet addressed to %x", p.Dst)
	}
	if p.Dst != c.RemoteALFID() {
		t.Fatalf("MULTIPLY not addressed to the parent's peer ALFID")
	}
	t.Logf("clone %x: first packet %v with %d payload bytes (EOT); %d packets sent in all, later ones dropped",
		id, p.Opcode, len(msg), len(pkts))
	h.mu.Lock()
	h.drop = nil
	h.mu.Unlock()
	// The clone works both ways afterwards.
	go sf.SendMessage(ctx, []byte("reply"))
	if m, err := f.ReceiveMessage(ctx); err != nil || string(m) != "reply" {
		t.Fatal(m, err)
	}
	f.Close()
}
