package netem

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"
)

// FuzzLink drives a link (without sockets) with arbitrary impairments and
// packet sizes and checks that every packet is accounted for exactly
// once: delivered intact, duplicated or dropped, never invented, and in
// order unless Reorder is set.
func FuzzLink(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint8(0), uint16(0), uint16(0), uint32(0), uint16(0), int64(1), []byte{10, 200, 3})
	f.Add(uint8(25), uint8(10), uint8(10), uint16(200), uint16(100), uint32(2_000_000), uint16(4000), int64(2), []byte{255, 1, 0, 7, 99})
	f.Add(uint8(255), uint8(255), uint8(255), uint16(0), uint16(0), uint32(1), uint16(1), int64(3), []byte{0})
	f.Fuzz(func(t *testing.T, loss, reorder, dup uint8, delayUS, jitterUS uint16, rate uint32, queue uint16, seed int64, sizes []byte) {
		if len(sizes) > 64 {
			sizes = sizes[:64]
		}
		cfg := Config{
			Loss:         float64(loss) / 255,
			Reorder:      float64(reorder) / 255,
			ReorderDelay: time.Duration(delayUS%1000) * time.Microsecond,
			Duplicate:    float64(dup) / 255,
			Delay:        time.Duration(delayUS%2000) * time.Microsecond,
			Jitter:       time.Duration(jitterUS%2000) * time.Microsecond,
			QueueBytes:   int(queue),
			Seed:         seed,
		}
		if rate > 0 {
			cfg.Rate = int64(max(rate, 1_000_000)) // keep each run short
		}
		var mu sync.Mutex
		var got [][]byte
		l := newLink(cfg, func(b []byte, _ int) error {
			mu.Lock()
			got = append(got, bytes.Clone(b))
			mu.Unlock()
			return nil
		})
		defer l.close()
		for i, s := range sizes {
			p := make([]byte, 4+int(s)*8)
			binary.BigEndian.PutUint32(p, uint32(i))
			for j := 4; j < len(p); j++ {
				p[j] = byte(i + j)
			}
			if err := l.send(p, 0); err != nil {
				t.Fatal(err)
			}
		}
		n := uint64(len(sizes))
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			// A packet is counted just before its delivery, so wait for
			// the deliveries too.
			st := l.stats.snapshot()
			mu.Lock()
			delivered := uint64(len(got))
			mu.Unlock()
			if st.Packets+st.Dropped == n+st.Duplicated && delivered == st.Packets {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("packets unaccounted for: sent %d, stats %+v", n, st)
			}
		}
		st := l.stats.snapshot()
		mu.Lock()
		defer mu.Unlock()
		if uint64(len(got)) != st.Packets {
			t.Fatalf("%d delivered, stats %+v", len(got), st)
		}
		seen := make(map[uint32]int)
		last := -1
		for _, p := range got {
			i := binary.BigEndian.Uint32(p)
			if int(i) >= len(sizes) || len(p) != 4+int(sizes[i])*8 {
				t.Fatalf("invented packet %d of %d bytes", i, len(p))
			}
			for j := 4; j < len(p); j++ {
				if p[j] != byte(int(i)+j) {
					t.Fatalf("packet %d corrupted", i)
				}
			}
			seen[i]++
			if seen[i] > 2 {
				t.Fatalf("packet %d delivered %d times", i, seen[i])
			}
			if cfg.Reorder == 0 && int(i) < last {
				t.Fatalf("packet %d after %d without Reorder", i, last)
			}
			last = max(last, int(i))
		}
	})
}
