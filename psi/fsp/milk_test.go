package fsp

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/postsockets/postsockets/internal/netem"
	"github.com/postsockets/postsockets/psi"
)

// milkMessage is message i: its index, then bytes derived from it.
func milkMessage(i, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, uint64(i))
	for k := 8; k < size; k++ {
		b[k] = byte(i*7 + k)
	}
	return b
}

// TestMilkClone sends many messages on a milk clone through a lossy link
// to a reader that stalls now and then, with small buffers at both ends.
// The reader must get the last message (a lost old one never holds it
// up), every message it gets whole, and never an older message after a
// newer one. Superseded data is not retransmitted.
func TestMilkClone(t *testing.T) {
	c, s := lossyPairConfig(t, netem.Config{Loss: 0.05, Reorder: 0.02, Duplicate: 0.01, Seed: 21},
		func(c *Config) { c.ReceiveWindow = 64 << 10; c.SendBuffer = 64 << 10 })
	ctx := testContext(t)
	f, err := c.ForkClass(ctx, psi.Milk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Class() != psi.Milk || c.Class() != psi.Wine {
		t.Fatal("classes:", f.Class(), c.Class())
	}
	const size = 3000
	var sf *Conn
	// readUntil reads until message last, checking order and contents.
	readUntil := func(last int, slow bool) (got int) {
		prev := -1
		for prev != last {
			m, err := sf.ReceiveMessage(ctx)
			if err != nil {
				t.Fatalf("after message %d: %v", prev, err)
			}
			if len(m) != size {
				t.Fatalf("message of %d bytes", len(m))
			}
			i := int(binary.BigEndian.Uint64(m))
			if i <= prev {
				t.Fatalf("message %d after %d", i, prev)
			}
			if !bytes.Equal(m, milkMessage(i, size)) {
				t.Fatalf("message %d corrupted", i)
			}
			prev = i
			got++
			if slow && got%20 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		return got
	}

	// A writer faster than the lossy link: its send buffer overflows.
	const n = 3000
	werr := make(chan error, 1)
	go func() {
		for i := range n {
			if err := f.SendMessage(ctx, milkMessage(i, size)); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	sf, err = s.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if sf.Class() != psi.Milk {
		t.Fatal("the accepted clone is not milk")
	}
	got := readUntil(n-1, true)
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	fs := f.Stats()
	t.Logf("fast writer: read %d of %d messages; sender: %d packets sent, %d retransmitted, %d superseded",
		got, n, fs.PacketsSent, fs.Retransmissions, fs.Superseded)
	if fs.Superseded == 0 {
		t.Error("nothing superseded: the send buffer did not overflow")
	}

	// A reader that stops while the (paced) writer goes on: its buffer
	// keeps the newest messages.
	const m = 300
	for i := range m {
		if err := f.SendMessage(ctx, milkMessage(n+i, size)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Microsecond)
	}
	got = readUntil(n+m-1, false)
	fs, ss := f.Stats(), sf.Stats()
	t.Logf("stalled reader: read %d of %d messages; sender: %d packets sent, %d retransmitted, %d superseded; receiver: %d skipped, %d messages evicted",
		got, m, fs.PacketsSent, fs.Retransmissions, fs.Superseded, ss.Skipped, ss.Evicted)
	if ss.Evicted == 0 {
		t.Error("nothing evicted: the receive buffer did not overflow")
	}
	// The root stays wine and still carries everything.
	msg := randBytes(200000)
	go c.SendMessage(ctx, msg)
	if m, err := s.ReceiveMessage(ctx); err != nil || !bytes.Equal(m, msg) {
		t.Fatal("root:", err)
	}
}

// TestMilkForkStack forks a milk transient through psi.
func TestMilkForkStack(t *testing.T) {
	scfg, ccfg := pair(t)
	l := listen(t, scfg)
	c, s := connect(t, l, ccfg)
	ctx := testContext(t)
	ct, st := &transient{c: c}, &transient{c: s}
	if !ct.Features().Has(psi.MilkClones) {
		t.Fatal("no milk-clones feature")
	}
	f, err := ct.Fork(ctx, psi.Milk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.WriteMessage(ctx, []byte("fresh"), true, nil); err != nil {
		t.Fatal(err)
	}
	sf, err := st.AcceptFork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	type classer interface{ Class() psi.TrafficClass }
	if f.(classer).Class() != psi.Milk || ct.Class() != psi.Wine {
		t.Fatal("transient classes")
	}
	if ConnOf(sf).Class() != psi.Milk || sf.(classer).Class() != psi.Milk {
		t.Fatal("accepted clone is not milk")
	}
	buf := make([]byte, 64)
	n, end, err := sf.ReadMessage(ctx, buf)
	if err != nil || !end || string(buf[:n]) != "fresh" {
		t.Fatal(string(buf[:n]), end, err)
	}
}
