package fsp

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// ticketListener listens on a recorded socket whose first n NEW_TICKETs
// are lost, for a client configuration with a session cache. It returns
// how many NEW_TICKETs the listener sent, to be read with lh.mu held.
func ticketListener(t *testing.T, n int) (*Listener, *Config, *recConn, map[wire.Opcode]int) {
	t.Helper()
	scfg, ccfg := pair(t)
	ccfg.Security.SessionCache = tls.NewLRUClientSessionCache(4)
	lh := &recConn{PacketConn: mustUDP(t)}
	tr := &Transport{Conn: lh}
	t.Cleanup(func() { tr.Close() })
	l, err := tr.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, ccfg, lh, dropFirstSent(lh, map[wire.Opcode]int{wire.Ticket: n})
}

// ticketsSent reads how many NEW_TICKETs the listener sent.
func ticketsSent(lh *recConn, sent map[wire.Opcode]int) int {
	lh.mu.Lock()
	defer lh.mu.Unlock()
	return sent[wire.Ticket]
}

// waitTicketAcked waits until the listener's end s heard that its ticket
// arrived: it resends no more.
func waitTicketAcked(t *testing.T, s *Conn) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		acked := s.ticket == nil
		s.mu.Unlock()
		if acked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the listener still resends its ticket 5 s on")
		}
	}
}

// TestTicketResent: the listener's first three tickets are lost. It sends
// another until the client says one arrived, so the next dial resumes.
// On the old code the ticket went once and the test waited 5 s for it.
func TestTicketResent(t *testing.T) {
	l, ccfg, lh, sent := ticketListener(t, 3)
	c, s := connect(t, l, ccfg)
	pingPong(t, c, s)
	waitTicket(t, ccfg.Security.SessionCache, c)
	waitTicketAcked(t, s)
	if n := ticketsSent(lh, sent); n < 4 {
		t.Errorf("%d tickets sent; want the 3 lost and one more", n)
	}
	c.Close()

	c2, s2 := connect(t, l, ccfg)
	if !c2.Resumed() || !s2.Resumed() {
		t.Fatalf("next dial not resumed: client %v, server %v", c2.Resumed(), s2.Resumed())
	}
	pingPong(t, c2, s2)
	waitTicket(t, ccfg.Security.SessionCache, c2) // the resumed session's, not lost
	waitTicketAcked(t, s2)
}

// TestTicketResentAfterClose: the ticket is lost and the client closes
// at once after one exchange; the resent ticket reaches it in time-wait
// (or before its Close ends), and the next dial resumes.
func TestTicketResentAfterClose(t *testing.T) {
	l, ccfg, _, _ := ticketListener(t, 1)
	c, s := connect(t, l, ccfg)
	pingPong(t, c, s)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitTicket(t, ccfg.Security.SessionCache, c)
	c2, s2 := connect(t, l, ccfg)
	if !c2.Resumed() || !s2.Resumed() {
		t.Fatalf("next dial not resumed: client %v, server %v", c2.Resumed(), s2.Resumed())
	}
}

// TestHalfRTTTicketResent: on a 0-RTT resumption the answer arrives but
// the first two tickets after it are lost (the client repeats no RESTORE,
// which got a new ticket before). The listener resends once the client
// confirmed, and the next dial resumes. It fails on the old code.
func TestHalfRTTTicketResent(t *testing.T) {
	l, ccfg, lh, sent, c, s := serverFirstLosing(t, map[wire.Opcode]int{wire.Ticket: 2})
	waitTicketAcked(t, s)
	if n := ticketsSent(lh, sent); n < 3 {
		t.Errorf("%d tickets sent; want the 2 lost and one more", n)
	}
	c.Close()

	c2, acc2 := halfDial(t, l, ccfg, &recConn{PacketConn: mustUDP(t)})
	s2 := <-acc2
	if s2 == nil {
		t.Fatal("Accept failed")
	}
	if !s2.Resumed() || !s2.Used0RTT() {
		t.Fatalf("next dial: resumed %v, 0-RTT %v", s2.Resumed(), s2.Used0RTT())
	}
	pingPong(t, c2, s2)
}
