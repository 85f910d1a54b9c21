package reliability

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestSenderAckAndLoss(t *testing.T) {
	s := NewSender[int](1)
	now := time.Now()
	for i := range 10 {
		s.Push(i, 100)
	}
	for e := s.NextToSend(100); e != nil; e = s.NextToSend(100) {
		s.OnSent(e, now)
	}
	if s.BytesInFlight() != 1000 || s.HasPending() {
		t.Fatalf("in flight %d", s.BytesInFlight())
	}
	var res AckResult[int]
	// 1..3 arrived, 4 and 5 missing, 6..10 arrived.
	s.OnAck(now.Add(time.Millisecond), 4, []Gap{{Gap: 2, Data: 5}}, 10, time.Second, &res)
	if len(res.Acked) != 8 || !res.HasRTT || s.Base() != 4 {
		t.Fatalf("acked %d, base %d", len(res.Acked), s.Base())
	}
	if res.RTTEntry == nil || res.RTTEntry.Value != 9 {
		t.Fatalf("the sample's entry is %v, want the newest acknowledged (10th)", res.RTTEntry)
	}
	if len(res.Lost) != 2 || res.Lost[0].Seq != 4 || res.Lost[1].Seq != 5 {
		t.Fatalf("lost %v", len(res.Lost))
	}
	e := s.NextToSend(4) // retransmissions ignore the flow-control limit
	if e == nil || e.Seq != 4 {
		t.Fatal("no retransmission of 4")
	}
	s.OnSent(e, now)
	e = s.NextToSend(4)
	s.OnSent(e, now)
	s.OnAck(now, 11, nil, 10, time.Second, &res)
	if s.Len() != 0 || s.BytesInFlight() != 0 || res.HasRTT {
		t.Fatalf("len %d inflight %d rtt %v (retransmitted: no sample)", s.Len(), s.BytesInFlight(), res.HasRTT)
	}
}

func TestSenderTimeout(t *testing.T) {
	s := NewSender[int](1)
	now := time.Now()
	for i := range 4 {
		s.OnSent(s.Get(s.Push(i, 10)), now)
	}
	if n := s.OnTimeout(s.Len()); n != 4 || s.BytesInFlight() != 0 {
		t.Fatalf("timeout marked %d", n)
	}
	for i := uint64(1); i <= 4; i++ {
		if e := s.NextToSend(0); e == nil || e.Seq != i {
			t.Fatalf("retransmission order at %d", i)
		}
	}
}

func TestReceiverReorder(t *testing.T) {
	r := NewReceiver[uint64](1)
	seqs := rand.Perm(200)
	var got []uint64
	for _, i := range seqs {
		seq := uint64(i + 1)
		if !r.Insert(seq, seq, 1000) {
			t.Fatalf("insert %d refused", seq)
		}
		if r.Insert(seq, seq, 1000) {
			t.Fatal("duplicate accepted")
		}
		for v, ok := r.Pop(); ok; v, ok = r.Pop() {
			got = append(got, v)
		}
		gaps := r.Gaps(nil, 64)
		for _, g := range gaps {
			if g.Gap == 0 || g.Data == 0 {
				t.Fatalf("bad gap %+v", g)
			}
		}
	}
	for i, v := range got {
		if v != uint64(i+1) {
			t.Fatalf("order broken at %d: %d", i, v)
		}
	}
	if len(got) != 200 || r.Insert(5, 5, 1000) || r.Insert(2000, 0, 1000) {
		t.Fatal("late duplicate or out-of-window accepted")
	}
}

func TestGaps(t *testing.T) {
	r := NewReceiver[int](1)
	for _, s := range []uint64{3, 4, 7, 9} {
		r.Insert(s, 0, 100)
	}
	gaps := r.Gaps(nil, 64)
	want := []Gap{{2, 2}, {2, 1}, {1, 1}}
	if len(gaps) != len(want) {
		t.Fatalf("gaps %v", gaps)
	}
	for i := range want {
		if gaps[i] != want[i] {
			t.Fatalf("gaps %v, want %v", gaps, want)
		}
	}
}

func TestReceiverStrip(t *testing.T) {
	r := NewReceiver[int](1)
	r.Insert(1, 10, 100)
	r.Insert(3, 30, 100)
	r.Strip(func(v int) int { return -v })
	if v, ok := r.Pop(); !ok || v != -10 {
		t.Fatalf("head after Strip: %d %v", v, ok)
	}
	// Seq 3 is still known to have arrived: seq 2 completes up to 4.
	r.Insert(2, 20, 100)
	for _, ok := r.Pop(); ok; _, ok = r.Pop() {
	}
	if r.Expected() != 4 {
		t.Fatalf("expected %d after Strip, want 4", r.Expected())
	}
}

func TestProbe(t *testing.T) {
	s := NewSender[int](1)
	now := time.Unix(0, 0)
	if s.Probe(2) != 0 {
		t.Fatal("probe with nothing in flight")
	}
	for i := range 4 {
		s.OnSent(s.Get(s.Push(i, 100)), now)
	}
	var res AckResult[int]
	s.OnAck(now, 2, nil, 0, time.Second, &res) // the first is acknowledged
	if n := s.Probe(2); n != 2 {
		t.Fatalf("Probe(2) = %d", n)
	}
	var got []uint64
	for e := s.NextToSend(100); e != nil; e = s.NextToSend(100) {
		got = append(got, e.Seq)
		s.OnSent(e, now)
	}
	if len(got) != 2 || got[0] != 2 || got[1] != 4 {
		t.Fatalf("probed %v, want oldest and newest in flight [2 4]", got)
	}
	if s.BytesInFlight() != 300 {
		t.Fatalf("in flight %d after the probes", s.BytesInFlight())
	}
	if n := s.Probe(1); n != 1 || s.NextToSend(100).Seq != 4 {
		t.Fatal("Probe(1) does not requeue the newest")
	}
}
