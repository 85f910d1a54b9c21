package fsp

import (
	"sync/atomic"
	"testing"
	"time"
)

// quietPair connects a client, muted if mute (its datagrams dropped),
// sends one small message from the listener's side to the client and
// then ends the client's quiet probes, as if they had run out.
func quietPair(t *testing.T, mute bool) (cli, srv *Conn) {
	t.Helper()
	scfg, ccfg := pair(t)
	var muted atomic.Bool
	cc := &hookConn{PacketConn: mustUDP(t), onWrite: func(b []byte, send func([]byte)) {
		if !muted.Load() {
			send(b)
		}
	}}
	cli, srv, _ = pairOver(t, &Transport{Conn: mustUDP(t)}, &Transport{Conn: cc}, scfg, ccfg)
	muted.Store(mute) // the listener hears no acknowledgement and resends
	ctx := testContext(t)
	if err := srv.SendMessage(ctx, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ReceiveMessage(ctx); err != nil {
		t.Fatal(err)
	}
	cli.mu.Lock()
	cli.quietAt, cli.quietProbes = time.Time{}, maxQuietProbes
	cli.mu.Unlock()
	return cli, srv
}

// quietArmed reports whether c's quiet probes were rearmed.
func quietArmed(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.quietAt.IsZero()
}

// TestQuietNotRearmedByDuplicate: a retransmission of data already
// received (our acknowledgement was lost) proves the peer is sending,
// and is no new data to watch for silence after: it does not rearm the
// quiet probes, which asked for acknowledgements by the thousand from
// TestManyDials' clients under load (docs/benchmarks.md).
func TestQuietNotRearmedByDuplicate(t *testing.T) {
	cli, _ := quietPair(t, true)
	cli.mu.Lock()
	dups := cli.stats.Duplicates
	cli.mu.Unlock()
	// Resent at the listener's growing RTO: a bound, not a timing.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		cli.mu.Lock()
		n := cli.stats.Duplicates
		cli.mu.Unlock()
		if n > dups {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no duplicate received")
		}
	}
	if quietArmed(cli) {
		t.Fatal("a duplicate rearmed the quiet probes")
	}
}

// TestQuietNotRearmedByRelease: the peer's RELEASE ends the connection;
// its silence afterwards says nothing, so the RELEASE does not rearm the
// quiet probes.
func TestQuietNotRearmedByRelease(t *testing.T) {
	cli, srv := quietPair(t, false)
	go srv.Close()
	waitUntil(t, "the peer's RELEASE received", func() bool {
		cli.mu.Lock()
		defer cli.mu.Unlock()
		return cli.peerReleased
	})
	if quietArmed(cli) {
		t.Fatal("the peer's RELEASE rearmed the quiet probes")
	}
}
