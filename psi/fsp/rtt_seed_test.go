package fsp

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
)

// TestAcceptedRTTSeeded: the listener's end of a full handshake has an
// RTT sample at Accept. On a fast path it often had none (the initial
// 100 ms): the connection loop's clock, read once for a run of
// datagrams, predated the stamp of the answer the confirmation came
// after, and the negative sample was dropped.
func TestAcceptedRTTSeeded(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	initial := 0
	const n = 20
	for range n {
		c, s := connect(t, l, ccfg)
		if s.Stats().SmoothedRTT == congestion.InitialRTT {
			initial++
		}
		c.Close()
		s.Close()
	}
	if initial > 0 {
		t.Fatalf("%d of %d accepted connections had no RTT sample", initial, n)
	}
}

// TestResumedRTTSeeded: a connection's RTT estimate comes from its
// handshake on both ends of a resumption, not congestion.InitialRTT
// (100 ms). The resumed initiator took no sample from RESTORE and its
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
		if rtt := c.Stats().SmoothedRTT; rtt == congestion.InitialRTT {
			t.Errorf("resumed initiator's RTT %v at Dial: the initial value", rtt)
		}
		if rtt := s.Stats().SmoothedRTT; rtt == congestion.InitialRTT {
			t.Errorf("listener's RTT %v at Accept: the initial value", rtt)
		}
	})
	t.Run("0.5-RTT", func(t *testing.T) {
		l, ccfg := resumableOn(t, &recConn{PacketConn: mustUDP(t)}, nil)
		ccfg.Linger = 100 * time.Millisecond // the cleanup's Close: nothing gets through
		h := &recConn{PacketConn: mustUDP(t), drop: onlyRestores}
		_, acc := halfDial(t, l, ccfg, h)
		s := <-acc
		if s == nil {
			t.Fatal("Accept failed")
		}
		if confirmed(s) {
			t.Fatal("confirmed with every client packet but RESTORE lost")
		}
		if rtt := s.Stats().SmoothedRTT; rtt == congestion.InitialRTT {
			t.Errorf("0-RTT connection's RTT %v at Accept: the initial value", rtt)
		}
	})
}
