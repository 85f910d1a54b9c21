package netem

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/postsockets/postsockets/post"
)

// sendBatches sends n packets in batches and waits after each batch until
// the receiver got everything the sender delivered, so no packet is lost
// to a full socket buffer. It returns the sequence numbers received.
func sendBatches(t *testing.T, s *PacketConn, r *net.UDPConn, n, batch int) []uint32 {
	t.Helper()
	var got []uint32
	for i := 0; i < n; {
		for j := 0; j < batch && i < n; j++ {
			if _, err := s.WriteTo(seqPacket(uint32(i), 16), r.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			i++
		}
		want := int(s.Stats().Packets)
		got = append(got, readN(t, r, want-len(got))...)
	}
	return got
}

// newConn2 returns a PacketConn made by New or, if duplex, by NewDuplex
// with inbound impairments in.
func newConn2(t *testing.T, duplex bool, in Config) *PacketConn {
	if duplex {
		return NewDuplex(listenUDP(t), Config{}, in)
	}
	return New(listenUDP(t), Config{})
}

func TestPerfectLink(t *testing.T) {
	s, r := newPair(t, Config{})
	got := sendBatches(t, s, r, 1000, 50)
	if len(got) != 1000 || !slices.IsSorted(got) {
		t.Fatalf("got %d packets, sorted=%v", len(got), slices.IsSorted(got))
	}
	st := s.Stats()
	if st.Packets != 1000 || st.Bytes != 16000 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLoss(t *testing.T) {
	const n, p = 10000, 0.1
	s, r := newPair(t, Config{Loss: p, Seed: 1})
	got := sendBatches(t, s, r, n, 50)
	st := s.Stats()
	if st.Packets+st.Dropped != n || int(st.Packets) != len(got) {
		t.Fatalf("stats %+v, received %d", st, len(got))
	}
	// Five standard deviations either side.
	sigma := math.Sqrt(p * (1 - p) / n)
	loss := 1 - float64(len(got))/n
	if math.Abs(loss-p) > 5*sigma {
		t.Fatalf("loss %.4f, want %.2f±%.4f", loss, p, 5*sigma)
	}
	if !slices.IsSorted(got) {
		t.Fatal("loss reordered packets")
	}
	t.Logf("loss %.4f over %d packets", loss, n)
}

func TestLossRandomSeed(t *testing.T) {
	s, r := newPair(t, Config{Loss: 0.5})
	got := sendBatches(t, s, r, 2000, 50)
	if len(got) < 700 || len(got) > 1300 {
		t.Fatalf("received %d of 2000 with 50%% loss", len(got))
	}
}

func TestDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	s, r := newPair(t, Config{Delay: delay})
	start := time.Now()
	go func() {
		for i := range 20 {
			b := make([]byte, 8)
			binary.BigEndian.PutUint64(b, uint64(time.Since(start)))
			s.WriteTo(b, r.LocalAddr())
			time.Sleep(time.Millisecond)
			_ = i
		}
	}()
	buf := make([]byte, 64)
	r.SetReadDeadline(time.Now().Add(guard))
	var excess time.Duration
	for range 20 {
		n, _, err := r.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		arrived := time.Since(start)
		sent := time.Duration(binary.BigEndian.Uint64(buf[:n]))
		if arrived-sent < delay {
			t.Fatalf("packet took %v, want >= %v", arrived-sent, delay)
		}
		excess += arrived - sent - delay
	}
	t.Logf("mean delay beyond %v: %v", delay, excess/20)
}

func TestJitterKeepsOrder(t *testing.T) {
	s, r := newPair(t, Config{Delay: 5 * time.Millisecond, Jitter: 5 * time.Millisecond, Seed: 7})
	for i := range 200 {
		s.WriteTo(seqPacket(uint32(i), 16), r.LocalAddr())
	}
	got := readN(t, r, 200)
	if !slices.IsSorted(got) {
		t.Fatalf("jitter reordered: %v", got)
	}
}

func TestReorder(t *testing.T) {
	s, r := newPair(t, Config{Reorder: 0.2, ReorderDelay: 50 * time.Millisecond, Seed: 3})
	for i := range 200 {
		s.WriteTo(seqPacket(uint32(i), 16), r.LocalAddr())
	}
	got := readN(t, r, 200)
	if slices.IsSorted(got) {
		t.Fatal("no packet was reordered")
	}
	sorted := slices.Sorted(slices.Values(got))
	for i, v := range sorted {
		if v != uint32(i) {
			t.Fatalf("packets lost or duplicated: %v", sorted)
		}
	}
	if st := s.Stats(); st.Reordered == 0 || st.Packets != 200 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDuplicate(t *testing.T) {
	s, r := newPair(t, Config{Duplicate: 0.2, Seed: 5})
	got := sendBatches(t, s, r, 1000, 50)
	count := make(map[uint32]int)
	for _, v := range got {
		count[v]++
	}
	dups := 0
	for i := range uint32(1000) {
		switch count[i] {
		case 1:
		case 2:
			dups++
		default:
			t.Fatalf("packet %d arrived %d times", i, count[i])
		}
	}
	st := s.Stats()
	if dups == 0 || uint64(dups) != st.Duplicated || len(got) != 1000+dups {
		t.Fatalf("%d duplicates, %d received, stats %+v", dups, len(got), st)
	}
	if dups < 120 || dups > 280 {
		t.Fatalf("%d duplicates of 1000 at 20%%", dups)
	}
}

func TestRate(t *testing.T) {
	const rate, size, n = 500_000, 1000, 250 // 0.5 s of traffic
	s, r := newPair(t, Config{Rate: rate, QueueBytes: size * n})
	start := time.Now()
	for i := range n {
		s.WriteTo(seqPacket(uint32(i), size), r.LocalAddr())
	}
	got := readN(t, r, n)
	elapsed := time.Since(start)
	if !slices.IsSorted(got) {
		t.Fatal("rate limit reordered packets")
	}
	want := time.Duration(float64(size*n) / rate * float64(time.Second))
	if elapsed < want*9/10 || elapsed > want*10 {
		t.Fatalf("%d bytes took %v at %d B/s, want about %v", size*n, elapsed, rate, want)
	}
	t.Logf("%d bytes in %v (%.0f B/s, configured %d)", size*n, elapsed, float64(size*n)/elapsed.Seconds(), rate)
}

func TestRateQueueOverflow(t *testing.T) {
	s, r := newPair(t, Config{Rate: 100_000, QueueBytes: 10_000})
	for i := range 100 {
		s.WriteTo(seqPacket(uint32(i), 1000), r.LocalAddr())
	}
	st := s.Stats()
	if st.QueueDrops < 50 || st.QueueDrops != st.Dropped {
		t.Fatalf("stats %+v", st)
	}
	got := readN(t, r, 100-int(st.Dropped))
	// Tail drop: the first packets got through.
	for i, v := range got {
		if v != uint32(i) {
			t.Fatalf("got %v, want a prefix", got)
		}
	}
}

func TestBlackhole(t *testing.T) {
	s, r := newPair(t, Config{})
	s.SetBlackhole(true)
	for i := range 100 {
		s.WriteTo(seqPacket(uint32(i), 16), r.LocalAddr())
	}
	s.SetBlackhole(false)
	s.WriteTo(seqPacket(1000, 16), r.LocalAddr())
	if got := readN(t, r, 1); got[0] != 1000 {
		t.Fatalf("packet %d got through the blackhole", got[0])
	}
	if st := s.Stats(); st.Dropped != 100 || st.Packets != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBlackholeDropsInFlight(t *testing.T) {
	s, r := newPair(t, Config{Delay: 20 * time.Millisecond})
	s.WriteTo(seqPacket(1, 16), r.LocalAddr())
	s.SetBlackhole(true)
	waitFor(t, "the delayed packet to drop", func() bool { return s.Stats().Dropped == 1 })
	s.SetConfig(Config{}) // clears the blackhole and the delay
	s.WriteTo(seqPacket(2, 16), r.LocalAddr())
	if got := readN(t, r, 1); got[0] != 2 {
		t.Fatalf("got %d", got[0])
	}
}

func TestBlackholeInbound(t *testing.T) {
	for _, duplex := range []bool{false, true} {
		checkLeaks(t)
		r := newConn2(t, duplex, Config{})
		defer r.Close()
		s := listenUDP(t)
		r.SetBlackhole(true)
		for i := range 10 {
			s.WriteTo(seqPacket(uint32(i), 16), r.LocalAddr())
		}
		// Let the inbound side see the 10 packets before reopening.
		if duplex {
			waitFor(t, "inbound drops", func() bool { return r.InboundStats().Dropped == 10 })
		}
		if !duplex {
			r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, _, err := r.ReadFrom(make([]byte, 64)); !errors.Is(err, post.ErrTimeout) {
				t.Fatalf("read through blackhole: %v", err)
			}
		}
		r.SetBlackhole(false)
		s.WriteTo(seqPacket(99, 16), r.LocalAddr())
		if got := readN(t, r, 1); got[0] != 99 {
			t.Fatalf("duplex=%v: got %d", duplex, got[0])
		}
	}
}

func TestDuplexImpairsInbound(t *testing.T) {
	checkLeaks(t)
	r := NewDuplex(listenUDP(t), Config{}, Config{Delay: 20 * time.Millisecond, Duplicate: 1})
	defer r.Close()
	s := listenUDP(t)
	start := time.Now()
	for i := range 10 {
		s.WriteTo(seqPacket(uint32(i), 16), r.LocalAddr())
	}
	got := readN(t, r, 20)
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("inbound delay not applied")
	}
	for i, v := range got {
		if v != uint32(i/2) {
			t.Fatalf("got %v", got)
		}
	}
	if st := r.InboundStats(); st.Packets != 20 || st.Duplicated != 10 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	for _, duplex := range []bool{false, true} {
		checkLeaks(t)
		c := newConn2(t, duplex, Config{Delay: time.Millisecond})
		errc := make(chan error)
		go func() {
			_, _, err := c.ReadFrom(make([]byte, 10))
			errc <- err
		}()
		time.Sleep(10 * time.Millisecond) // let ReadFrom block; not required
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		err := <-errc
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, post.ErrClosed) {
			t.Fatalf("duplex=%v: ReadFrom after Close: %v", duplex, err)
		}
		if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); !errors.Is(err, post.ErrClosed) {
			t.Fatalf("WriteTo after Close: %v", err)
		}
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Close: %v", err)
		}
	}
}

func TestCloseDropsScheduled(t *testing.T) {
	s, r := newPair(t, Config{Delay: time.Hour})
	for i := range 10 {
		s.WriteTo(seqPacket(uint32(i), 16), r.LocalAddr())
	}
	s.Close()
	if st := s.Stats(); st.Dropped != 10 || st.Packets != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDeadlines(t *testing.T) {
	for _, duplex := range []bool{false, true} {
		checkLeaks(t)
		c := newConn2(t, duplex, Config{})
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(-time.Second))
		_, _, err := c.ReadFrom(make([]byte, 10))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, post.ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("duplex=%v: read past deadline: %v", duplex, err)
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, _, err := c.ReadFrom(make([]byte, 10)); !isTimeout(err) {
			t.Fatalf("duplex=%v: read with deadline: %v", duplex, err)
		}
		c.SetReadDeadline(time.Time{})
		c.SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); !errors.Is(err, post.ErrTimeout) {
			t.Fatalf("write past deadline: %v", err)
		}
		c.SetDeadline(time.Time{})
		if _, err := c.WriteTo(seqPacket(1, 4), c.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, c, 1); len(got) != 1 {
			t.Fatal(got)
		}
	}
}

func TestLargeDatagram(t *testing.T) {
	s, r := newPair(t, Config{Delay: time.Millisecond})
	p := seqPacket(42, 9000)
	if _, err := s.WriteTo(p, r.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, r, 1); got[0] != 42 {
		t.Fatal(got)
	}
	if _, err := s.WriteTo(make([]byte, 70000), r.LocalAddr()); !errors.Is(err, post.ErrMessageTooLarge) {
		t.Fatalf("oversized datagram: %v", err)
	}
}

func TestSetInboundConfigNeedsDuplex(t *testing.T) {
	c := New(listenUDP(t), Config{})
	defer c.Close()
	if err := c.SetInboundConfig(Config{Loss: 0.1}); !errors.Is(err, post.ErrNotSupported) {
		t.Fatal(err)
	}
	if err := c.SetInboundConfig(Config{Blackhole: true, Seed: 4}); err != nil {
		t.Fatal(err)
	}
}
