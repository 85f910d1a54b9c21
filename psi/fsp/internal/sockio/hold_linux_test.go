//go:build linux

package sockio

import (
	"bytes"
	"sync"
	"testing"
)

// checkPayload reports whether b is payload(seq, len(b)) for the seq it
// starts with.
func checkPayload(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	seq := int(b[0])<<8 | int(b[1])
	return bytes.Equal(b, payload(seq, len(b)))
}

// TestKeep: datagrams kept past later reads stay intact while the reader
// goes on reading new ones, with and without GRO; their space is
// released when the last share is.
func TestKeep(t *testing.T) {
	for _, gro := range []bool{true, false} {
		s, r, _ := groPair(t)
		if !gro {
			if err := r.setGRO(false); err != nil {
				t.Fatal(err)
			}
		}
		in := make([]Packet, 16)
		var kept [][]byte
		var holds []*Hold
		for round := range 4 {
			sent := equalBatch(64, 1000+round, r.LocalAddr())
			for i := range sent {
				sent[i].Buf = payload(round*64+i, 1000+round)
			}
			if n, err := s.WriteBatch(sent); err != nil || n != len(sent) {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			for got := 0; got < len(sent); {
				n, err := r.LendBatch(in)
				if err != nil {
					t.Fatal(err)
				}
				got += n
				if round%2 == 1 {
					continue // rounds 1 and 3 are read over the kept ones
				}
				h := r.Keep()
				if h == nil {
					t.Fatalf("gro=%v: Keep = nil with %d spaces kept", gro, r.spaces.Load())
				}
				h.Add(n)
				for _, p := range in[:n] {
					kept = append(kept, p.Buf)
					holds = append(holds, h)
				}
			}
		}
		for i, b := range kept {
			if !checkPayload(b) {
				t.Fatalf("gro=%v: kept datagram %d overwritten by a later read", gro, i)
			}
		}
		if r.spaces.Load() == 0 {
			t.Fatalf("gro=%v: no space counted as kept", gro)
		}
		r.release() // as a read of an empty socket does
		for _, h := range holds {
			h.Release(1)
		}
		if k := r.spaces.Load(); k != 0 {
			t.Errorf("gro=%v: %d spaces still kept after every share was released", gro, k)
		}
	}
}

// TestKeepBound: a socket keeps at most maxKept spaces; past that Keep
// returns nil, and it works again once one is released.
func TestKeepBound(t *testing.T) {
	s, r, _ := groPair(t)
	if err := r.setGRO(false); err != nil {
		t.Fatal(err)
	}
	in := make([]Packet, 1)
	var holds []*Hold
	for i := 0; ; i++ {
		if n, err := s.WriteBatch(equalBatch(1, 100, r.LocalAddr())); err != nil || n != 1 {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		if _, err := r.LendBatch(in); err != nil {
			t.Fatal(err)
		}
		h := r.Keep()
		if h == nil {
			if i != maxKept {
				t.Fatalf("Keep = nil after %d kept spaces, want %d", i, maxKept)
			}
			break
		}
		if i >= maxKept {
			t.Fatalf("Keep kept %d spaces, more than %d", i+1, maxKept)
		}
		h.Add(1)
		holds = append(holds, h)
	}
	holds[0].Release(1)
	if n, err := s.WriteBatch(equalBatch(1, 100, r.LocalAddr())); err != nil || n != 1 {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if _, err := r.LendBatch(in); err != nil {
		t.Fatal(err)
	}
	if r.Keep() == nil {
		t.Fatal("Keep = nil after a kept space was released")
	}
	r.release()
	for _, h := range holds[1:] {
		h.Release(1)
	}
	if k := r.spaces.Load(); k != 0 {
		t.Errorf("%d spaces still kept", k)
	}
}

// TestHoldDoubleRelease: releasing a share twice panics rather than let
// the space be reused while a datagram in it is still read.
func TestHoldDoubleRelease(t *testing.T) {
	rs := newReadState(1, smallMsgs)
	rs.h.refs.Store(1)
	rs.h.Add(1)
	rs.h.Release(1)
	rs.h.Release(1)
	defer func() {
		if recover() == nil {
			t.Error("a third Release of two shares did not panic")
		}
	}()
	rs.h.Release(1)
}

// TestKeepConcurrent: a consumer goroutine reads kept datagrams while the
// reader reads on, as FSP's connection loops do (run with -race).
func TestKeepConcurrent(t *testing.T) {
	s, r, _ := groPair(t)
	type item struct {
		b []byte
		h *Hold
	}
	ch := make(chan []item, 64)
	var wg sync.WaitGroup
	var bad int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for items := range ch {
			for _, it := range items {
				if !checkPayload(it.b) {
					bad++
				}
				it.h.Release(1)
			}
		}
	}()
	in := make([]Packet, 64)
	const total = 2000
	go func() {
		for i := 0; i < total; i += 50 {
			pk := equalBatch(50, 1200, r.LocalAddr())
			for j := range pk {
				pk[j].Buf = payload(i+j, 1200)
			}
			s.WriteBatch(pk)
		}
	}()
	copied := 0
	for got := 0; got < total; {
		n, err := r.LendBatch(in)
		if err != nil {
			break // the deadline: datagrams lost on loopback
		}
		got += n
		h := r.Keep()
		if h == nil {
			copied += n // over the bound: a caller would copy
			continue
		}
		h.Add(n)
		items := make([]item, n)
		for i, p := range in[:n] {
			items[i] = item{p.Buf, h}
		}
		ch <- items
	}
	close(ch)
	wg.Wait()
	r.release()
	if bad > 0 {
		t.Errorf("%d kept datagrams changed under the consumer", bad)
	}
	if k := r.spaces.Load(); k != 0 {
		t.Errorf("%d spaces still kept", k)
	}
	t.Logf("%d datagrams over the bound", copied)
}
