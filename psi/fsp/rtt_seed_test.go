package fsp

import (
	"crypto/tls"
	"testing"
	"time"
)

// sampled reports whether c's handshake could time a round trip: its
// last handshake packet left once (Karn's rule: which copy an answer
// answers is unknown), and then whether c's estimate left the initial
// value.
func sampled(c *Conn) (clean, seeded bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	once := 0 // the responder counts resends
	if c.initiator {
		once = 1
	}
	_, seeded = c.rtt.Estimate()
	return c.hsTries == once, seeded
}

// TestAcceptedRTTSeeded: the listener's end of a full handshake has an
// RTT sample at Accept. On a fast path it often had none (Stats said 0,
// and the timers went on the initial 100 ms): the connection loop's clock, read once for a run of
// datagrams, predated the stamp of the answer the confirmation came
// after, and the negative sample was dropped (4-5 of 20 on loopback).
// Handshakes that had to resend take no sample by design and are not
// counted.
func TestAcceptedRTTSeeded(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	unseeded, clean := 0, 0
	const n = 20
	for range n {
		c, s := connect(t, l, ccfg)
		if ok, seeded := sampled(s); ok {
			clean++
			if !seeded || s.Stats().SmoothedRTT == 0 {
				unseeded++
			}
		}
		c.Close()
		s.Close()
	}
	if unseeded > 0 {
		t.Fatalf("%d of %d accepted connections whose handshake sent its answer once had no RTT sample", unseeded, clean)
	}
	t.Logf("%d of %d handshakes sent their answer once", clean, n)
}

// TestResumedRTTSeeded: a connection's RTT estimate comes from its
// handshake on both ends of a resumption (Stats said 0 and the timers
// went on congestion.InitialRTT, 100 ms). The resumed initiator took no sample from RESTORE and its
// answer; a listener handing out a 0-RTT connection on RESTORE, before
// any round trip, had nothing, and now starts from the estimate of the
// session that issued the ticket (RFC 9002 §6.2.2).
func TestResumedRTTSeeded(t *testing.T) {
	t.Run("initiator", func(t *testing.T) {
		scfg, ccfg := pair(t)
		cache := tls.NewLRUClientSessionCache(4)
		ccfg.Security.SessionCache = cache
		l := listen(t, scfg)
		c, s := connect(t, l, ccfg)
		pingPong(t, c, s)
		waitTicket(t, cache, c)
		c, s = connect(t, l, ccfg)
		if !c.Resumed() {
			t.Fatal("not resumed")
		}
		for _, end := range []struct {
			name string
			c    *Conn
		}{{"resumed initiator", c}, {"listener", s}} {
			if clean, seeded := sampled(end.c); !clean {
				t.Logf("%s: its handshake packet was resent, no sample", end.name)
			} else if rtt := end.c.Stats().SmoothedRTT; !seeded || rtt == 0 {
				t.Errorf("%s's RTT %v after the handshake: not measured", end.name, rtt)
			}
		}
	})
	t.Run("0.5-RTT", func(t *testing.T) {
		l, ccfg := resumableOn(t, &recConn{PacketConn: mustUDP(t)}, nil)
		ccfg.Linger = 100 * time.Millisecond // the cleanup's Close: nothing gets through
		// The estimate the ticket carries: that of the session before,
		// unless its handshake resent its answer.
		cs, ok := ccfg.Security.SessionCache.Get("fsp:" + ccfg.Security.ServerName + "|" + l.Addr().String())
		if !ok || cs == nil {
			t.Fatal("no ticket")
		}
		blob, _, err := cs.ResumptionState()
		if err != nil {
			t.Fatal(err)
		}
		tk, err := l.tickets.open(blob, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		h := &recConn{PacketConn: mustUDP(t), drop: onlyRestores}
		_, acc := halfDial(t, l, ccfg, h)
		s := <-acc
		if s == nil {
			t.Fatal("Accept failed")
		}
		if confirmed(s) {
			t.Fatal("confirmed with every client packet but RESTORE lost")
		}
		rtt := s.Stats().SmoothedRTT
		if tk.rtt == 0 {
			t.Skip("the session before took no RTT sample (its handshake resent its answer)")
		}
		if rtt != tk.rtt {
			t.Errorf("0-RTT connection's RTT %v at Accept, the ticket's %v", rtt, tk.rtt)
		}
	})
}
