package fsp

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// TestResumeTakenTicket: a 0-RTT dial took the cached ticket and the
// next one has not come (the listener's tickets are all lost here). A
// dial meanwhile resumes on the same ticket, as crypto/tls reuses one
// for QUIC and TCP, but without 0-RTT: its first message waits for the
// handshake and arrives once. On the old code it made a full handshake.
func TestResumeTakenTicket(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	dropFirstSent(lh, map[wire.Opcode]int{wire.Ticket: 1 << 20})
	for i, want0RTT := range []bool{true, false, false} {
		firstOnce(t, l, ccfg, i, want0RTT).Close()
	}
}

// firstOnce dials l, 0-RTT allowed, and writes a first message, which
// must arrive once on a resumed connection, as 0-RTT data if want0RTT
// (dial i of the test). It returns the client's end.
func firstOnce(t *testing.T, l *Listener, ccfg *Config, i int, want0RTT bool) *Conn {
	t.Helper()
	ctx := testContext(t)
	c, acc := halfDial(t, l, ccfg, &recConn{PacketConn: mustUDP(t)})
	if err := c.SendMessage(ctx, []byte("first")); err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	if m, err := s.ReceiveMessage(ctx); err != nil || string(m) != "first" {
		t.Fatalf("dial %d: got %q, %v", i, m, err)
	}
	pingPong(t, c, s)
	if !c.Resumed() || !s.Resumed() {
		t.Fatalf("dial %d not resumed: client %v, server %v", i, c.Resumed(), s.Resumed())
	}
	if c.Used0RTT() != want0RTT || s.Used0RTT() != want0RTT {
		t.Fatalf("dial %d: 0-RTT client %v, server %v; want %v", i, c.Used0RTT(), s.Used0RTT(), want0RTT)
	}
	noMore(t, ctx, s, 50*time.Millisecond)
	return c
}

// TestZeroRTTTicketOnce: two dials present one ticket for 0-RTT, as two
// dials of a client that took it from its cache at the same instant do.
// The listener takes 0-RTT on the first only; the second resumes without,
// and its first message arrives once, after the handshake. On the old
// code both went as 0-RTT.
func TestZeroRTTTicketOnce(t *testing.T) {
	lh := &recConn{PacketConn: mustUDP(t)}
	l, ccfg := resumableOn(t, lh, nil)
	dropFirstSent(lh, map[wire.Opcode]int{wire.Ticket: 1 << 20}) // no newer ticket
	cache := ccfg.Security.SessionCache
	key := "fsp:" + ccfg.Security.ServerName + "|" + l.Addr().String()
	fresh, ok := cache.Get(key)
	if !ok || fresh == nil {
		t.Fatalf("no ticket under %q", key)
	}
	for i, want0RTT := range []bool{true, false} {
		c := firstOnce(t, l, ccfg, i, want0RTT)
		if c.ticketCacheKey() != key {
			t.Fatalf("the ticket is under %q", c.ticketCacheKey())
		}
		c.Close()
		cache.Put(key, fresh) // as if no dial had taken it
	}
}

// TestResumeExpiredTicket: a ticket received more than ticketLifetime ago
// is dropped from the cache at the next dial, which makes a full
// handshake without an error and caches the new ticket.
func TestResumeExpiredTicket(t *testing.T) {
	l, ccfg, cache := resumable(t, false)
	key := "fsp:" + ccfg.Security.ServerName + "|" + l.Addr().String()
	cs, ok := cache.Get(key)
	if !ok || cs == nil {
		t.Fatalf("no ticket under %q", key)
	}
	blob, st, err := cs.ResumptionState()
	if err != nil {
		t.Fatal(err)
	}
	meta := bytes.Clone(st.Extra[0])
	binary.BigEndian.PutUint64(meta[1:], uint64(time.Now().Add(-ticketLifetime-time.Second).UnixMilli()))
	old, err := tls.NewResumptionState(blob, &tls.SessionState{Extra: append([][]byte{meta}, st.Extra[1:]...)})
	if err != nil {
		t.Fatal(err)
	}
	cache.Put(key, old)
	c, s := connect(t, l, ccfg)
	if c.Resumed() || s.Resumed() {
		t.Fatal("resumed on an expired ticket")
	}
	pingPong(t, c, s)
	waitTicket(t, cache, c)
}
