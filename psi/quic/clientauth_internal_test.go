package quic

import (
	"crypto/tls"
	"testing"
)

// storeWatcher is a session cache that records whether the ticket
// signal had already fired when a ticket was stored.
type storeWatcher struct {
	w     *clientAuth
	early bool
}

func (s *storeWatcher) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

func (s *storeWatcher) Put(string, *tls.ClientSessionState) {
	select {
	case <-s.w.accepted:
		s.early = true
	default:
	}
}

// TestTicketStoredBeforeSignal: the server's ticket is in the cache by the
// time awaitTicket hears of it. The signal came first before, so a Close
// let go by it could return, and the next dial on the Association take
// the ticket already used, before the new one was stored: the listener's
// anti-replay refused its 0-RTT (carrier TestZeroRTTChain/quic, 'carrier
// 3 of one Association did not go as 0-RTT', the listener's strike
// register saying Replay).
func TestTicketStoredBeforeSignal(t *testing.T) {
	w := &clientAuth{accepted: make(chan struct{})}
	cache := &storeWatcher{w: w}
	sig := ticketSignal{c: cache, w: w}
	sig.Put("k", new(tls.ClientSessionState))
	if cache.early {
		t.Fatal("the ticket was reported before it was stored")
	}
	select {
	case <-w.accepted:
	default:
		t.Fatal("a stored ticket was not reported")
	}
}
