package fsp

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// keptSpaces is sockio's count of receive spaces kept by the connection
// loops (lent datagrams), on Linux.
type keptSpaces interface{ KeptSpaces() (uint64, int) }

// TestLentDatagrams: datagrams handed to the connection loops in the
// socket's receive space (no copy) arrive intact, and every share of that
// space is released once processed. Under -race sockio overwrites a space
// when its last share is released, so a receiver that kept a lent
// datagram past its release races with that write and delivers poison.
func TestLentDatagrams(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ks, ok := l.t.sio.(keptSpaces)
	if !ok {
		t.Skip("no batched socket I/O on this platform")
	}
	ctx := testContext(t)
	msgs := make([][]byte, 64)
	for i := range msgs {
		msgs[i] = randBytes(1 + i*4099%(96<<10))
	}
	errc := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := c.SendMessage(ctx, m); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, want := range msgs {
		got, err := s.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: %d bytes, not the %d sent", i, len(got), len(want))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	ever, _ := ks.KeptSpaces()
	if ever == 0 {
		t.Error("the listener's loops kept no datagram in the socket's space")
	}
	c.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		l.t.settle()
		_, held := ks.KeptSpaces()
		if held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d receive spaces still held after the loops went idle", held)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}
