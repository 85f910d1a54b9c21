package fsp

import (
	"sync/atomic"
	"testing"
)

// TestPMTUDNotForSmallMessages: a connection that exchanges one small
// message each way sends no path MTU probe (nor any datagram above the
// base size): a larger size would carry none of its packets. Probes
// start only once a message does not fit one packet (searchDone and
// the other TestPMTUD* tests).
func TestPMTUDNotForSmallMessages(t *testing.T) {
	scfg, ccfg := pair(t)
	var counting atomic.Bool
	var large atomic.Int64
	count := func(b []byte, send func([]byte)) {
		if counting.Load() && len(b) > BaseDatagramSize {
			large.Add(1)
		}
		send(b)
	}
	cc := &hookConn{PacketConn: mustUDP(t), onWrite: count}
	sc := &hookConn{PacketConn: mustUDP(t), onWrite: count}
	cli, srv, _ := pairOver(t, &Transport{Conn: sc}, &Transport{Conn: cc}, scfg, ccfg)
	counting.Store(true)
	ctx := testContext(t)
	if err := cli.SendMessage(ctx, []byte("question")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.ReceiveMessage(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.SendMessage(ctx, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ReceiveMessage(ctx); err != nil {
		t.Fatal(err)
	}
	// Probes leave only while data is in flight: once both messages
	// are acknowledged, no more can come.
	for _, c := range []*Conn{cli, srv} {
		waitUntil(t, "message acknowledged", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.snd.BytesInFlight() == 0 && !c.snd.HasPending()
		})
	}
	if n := large.Load(); n != 0 {
		t.Fatalf("%d datagrams above %d bytes (path MTU probes) for two small messages", n, BaseDatagramSize)
	}
}
