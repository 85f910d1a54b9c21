package fsp

import (
	"runtime"
	"testing"
)

// TestReplyCarriesAck: a clone's lone request asks for an immediate
// acknowledgement; the receiving loop lets the reader it woke run before
// sending it, so the reply written at once carries the acknowledgement
// and an exchange costs the server one packet, not two (issue 15: the
// separate acknowledgement was sealed and sent before the reader ran).
// On one core the order is fixed: the woken reader runs, replies and
// blocks before the loop resumes.
func TestReplyCarriesAck(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	srv := make(chan *Conn, 1)
	go func() {
		f, err := s.AcceptFork(ctx)
		if err != nil {
			return
		}
		srv <- f
		for {
			m, err := f.ReceiveMessage(ctx)
			if err != nil {
				return
			}
			if err := f.SendMessage(ctx, m); err != nil {
				return
			}
		}
	}()
	a, err := c.Fork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func() {
		t.Helper()
		if err := a.SendMessage(ctx, []byte("request")); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	exchange() // opens the clone
	f := <-srv
	const rounds = 100
	before := f.Stats()
	for range rounds {
		exchange()
	}
	after := f.Stats()
	// Probes (a loaded host may delay an acknowledgement past the short
	// tail probe timeout) are packets of their own, not replies.
	resent := after.Retransmissions - before.Retransmissions
	sent := after.PacketsSent - before.PacketsSent - resent
	if sent > rounds+rounds/4 {
		t.Errorf("the server sent %d packets besides %d resends for %d replies: the acknowledgements did not ride on them", sent, resent, rounds)
	}
	t.Logf("%d packets and %d resends for %d replies", sent, resent, rounds)
}
