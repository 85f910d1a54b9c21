package fsp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// rxAccountErr checks c's receive accounting (conn_jumbo.go, budget.go):
// rxBig counts the jumbo buffers its received packets hold; on a
// listener's live connection or clone, the charge is the fixed state,
// the room held for packets and for jumbo buffers and the partials'
// charge, and that room covers what c buffers; once closed, nothing is
// charged or held. Called with c.mu held.
func rxAccountErr(c *Conn) error {
	big := 0
	count := func(b *[]byte) {
		if isJumbo(b) {
			big++
		}
	}
	for _, d := range c.readQ[c.readHead:] {
		count(d.buf)
	}
	for _, d := range c.asm {
		count(d.buf)
	}
	for _, b := range c.rxSpare {
		count(b)
	}
	if c.rcv != nil {
		c.rcv.Strip(func(d rxData) rxData { count(d.buf); return d })
	}
	switch {
	case big != c.rxBig:
		return fmt.Errorf("rxBig %d, the received packets hold %d jumbo buffers", c.rxBig, big)
	case c.bud == nil:
		return nil
	case c.state == stateClosed:
		if c.charged != 0 || c.held != 0 || c.bigHeld != 0 || big != 0 {
			return fmt.Errorf("closed: %d bytes charged, room for %d packets and %d jumbo buffers, %d jumbo buffers held",
				c.charged, c.held, c.bigHeld, big)
		}
		return nil
	}
	frags := int64(0)
	if c.frags.charged {
		frags = (maxPartials - 1) * c.partialCost()
	}
	if want := connBase + int64(c.held)*rxCost + int64(c.bigHeld)*jumboExtra + frags; c.charged != want {
		return fmt.Errorf("charged %d, want %d: room for %d packets and %d jumbo buffers, partials %d",
			c.charged, want, c.held, c.bigHeld, frags)
	}
	if c.needed() > c.held || c.rxBig > c.bigHeld || c.bigHeld < c.jumboBase() {
		return fmt.Errorf("room for %d packets and %d jumbo buffers (base %d), %d packets and %d jumbo buffers held",
			c.held, c.bigHeld, c.jumboBase(), c.needed(), c.rxBig)
	}
	if c.bufferedBytes() > c.charged-connBase {
		return fmt.Errorf("%d bytes buffered, %d charged", c.bufferedBytes(), c.charged)
	}
	return nil
}

// checkRx fails t if c's receive accounting is off (rxAccountErr).
func checkRx(t testing.TB, c *Conn) {
	t.Helper()
	c.mu.Lock()
	err := rxAccountErr(c)
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
}

// feedJumbo hands c data packet seq, one message of n bytes in the
// buffer getBufFor gives; it reports whether c kept it.
func feedJumbo(c *Conn, seq uint64, n int) bool {
	p := wire.Packet{Header: wire.Header{Opcode: wire.PureData, Flags: wire.FlagEOT, Seq: uint32(seq)}}
	c.mu.Lock()
	defer c.mu.Unlock()
	buf := getBufFor(n)
	kept := c.onData(time.Now(), &p, buf, (*buf)[:n])
	if !kept {
		putBuf(buf)
	}
	return kept
}

// budgetConn is fragConn charged to a budget of room bytes past its
// connection charge, all of it for its one peer.
func budgetConn(t *testing.T, room int64) (*Conn, *budget) {
	t.Helper()
	c := fragConn(t)
	b := newBudget(connCharge() + room)
	b.share, b.pshare = b.limit, b.limit
	peer := netip.MustParseAddr("192.0.2.1")
	if !b.take(peer, connCharge()) {
		t.Fatal("no room")
	}
	c.mu.Lock()
	c.pmtu.ceil, c.rxMax = JumboDatagramSize, JumboDatagramSize
	c.bud, c.budPeer, c.charged, c.held = b, peer, connCharge(), baseWindow
	c.mu.Unlock()
	return c, b
}

// TestJumboChargeByBuffer: a listener's connection that takes jumbo
// datagrams is charged for each packet it buffers by the buffer it
// holds, small ones at rxCost and jumbo ones at rxJumboCost, in order or
// not, in the read queue or emptied for reuse; the room goes back to the
// bases once idle, and to nothing at the close.
func TestJumboChargeByBuffer(t *testing.T) {
	c, b := budgetConn(t, 1<<20)
	const big = maxJumboPayload
	first := c.rcv.Expected()
	for i := range uint64(4) {
		if !feedJumbo(c, first+i, MaxPayload) {
			t.Fatalf("small packet %d dropped", i)
		}
	}
	checkRx(t, c)
	if used := b.used; used != connCharge() {
		t.Fatalf("%d bytes used for the base window's small packets, want %d", used, connCharge())
	}
	c.mu.Lock()
	if !c.takeJumbo() {
		t.Fatal("jumbo refused")
	}
	c.mu.Unlock()
	base := connCharge() + baseWindow*jumboExtra
	if b.used != base {
		t.Fatalf("%d bytes used once jumbo, want %d", b.used, base)
	}
	// Out of order, jumbo and small mixed, within the window's bytes.
	for _, p := range []struct {
		off uint64
		n   int
	}{{9, big}, {5, big}, {6, MaxPayload}, {4, big}, {8, 100}, {7, big}, {10, big}, {11, big}} {
		if !feedJumbo(c, first+p.off, p.n) {
			t.Fatalf("packet %d dropped", p.off)
		}
		checkRx(t, c)
	}
	c.mu.Lock()
	jumbo, buffered, charged := c.rxBig, c.bufferedBytes(), c.charged
	c.mu.Unlock()
	if jumbo != 6 || buffered != 6*rxJumboCost+6*rxCost || charged < connBase+buffered {
		t.Fatalf("%d jumbo buffers, %d bytes buffered, %d charged", jumbo, buffered, charged)
	}
	// Read it all: the emptied buffers kept for reuse are still counted.
	ctx := testContext(t)
	for range 12 {
		if _, err := c.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
		checkRx(t, c)
	}
	c.mu.Lock()
	c.compact()
	held, bigHeld, used := c.held, c.bigHeld, b.used
	c.mu.Unlock()
	checkRx(t, c)
	if held != baseWindow || bigHeld != baseWindow || used != base {
		t.Fatalf("once idle: room for %d packets and %d jumbo buffers, %d bytes used, want %d", held, bigHeld, used, base)
	}
	// A spare handed to the loop leaves the count; the packet that keeps
	// it brings it back.
	if !feedJumbo(c, first+12, big) {
		t.Fatal("dropped after idle")
	}
	if _, err := c.ReceiveMessage(ctx); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	spare := c.takeRx()
	c.mu.Unlock()
	if !isJumbo(spare) {
		t.Fatal("no jumbo spare")
	}
	checkRx(t, c)
	putBuf(spare)
	c.teardown(nil, false)
	checkRx(t, c)
	if b.used != 0 {
		t.Fatalf("%d bytes charged after the close", b.used)
	}
}
