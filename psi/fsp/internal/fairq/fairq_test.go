package fairq

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

func TestTurns(t *testing.T) {
	var q Queue[string, int]
	for i := range 5 {
		q.Push("a", i, 1, nil)
	}
	q.Push("b", 100, 1, nil)
	q.Push("c", 200, 1, nil)
	var got []int
	for {
		_, v, ok := q.Pop()
		if !ok {
			break
		}
		got = append(got, v)
	}
	want := []int{0, 100, 200, 1, 2, 3, 4}
	if !slices.Equal(got, want) {
		t.Fatalf("served %v, want %v", got, want)
	}
	if q.Len() != 0 || q.Size() != 0 || q.Sources() != 0 {
		t.Fatalf("left %d items, cost %d, %d sources", q.Len(), q.Size(), q.Sources())
	}
}

func TestFullDropsFromLargest(t *testing.T) {
	q := Queue[string, int]{MaxItems: 4}
	for i := range 4 {
		if _, ok := q.Push("flood", i, 1, nil); !ok {
			t.Fatalf("push %d refused", i)
		}
	}
	out, ok := q.Push("flood", 4, 1, nil)
	if ok || len(out) != 0 {
		t.Fatalf("the largest source pushed into a full queue: ok %v, dropped %v", ok, out)
	}
	out, ok = q.Push("honest", 9, 1, nil)
	if !ok || !slices.Equal(out, []int{3}) {
		t.Fatalf("newcomer: ok %v, dropped %v; want the flood's newest (3)", ok, out)
	}
	// Two sources of two: neither holds more than the other.
	q.Push("honest", 10, 1, nil) // drops flood's 2
	if _, ok := q.Push("honest", 11, 1, nil); ok {
		t.Fatal("a source as large as the largest took its room")
	}
}

// TestRoom: Room says what Push would do.
func TestRoom(t *testing.T) {
	q := Queue[string, int]{MaxItems: 3, Slot: 1}
	for _, k := range []string{"a", "a", "b"} {
		if !q.Room(k, 0) {
			t.Fatalf("no room for %s in a queue of %d", k, q.Len())
		}
		q.Push(k, 0, 0, nil)
	}
	for _, tt := range []struct {
		k    string
		want bool
	}{{"a", false}, {"b", true}, {"b", false}, {"c", true}} {
		if got := q.Room(tt.k, 0); got != tt.want {
			t.Errorf("Room(%s) = %v, want %v", tt.k, got, tt.want)
		}
		if _, ok := q.Push(tt.k, 0, 0, nil); ok != tt.want {
			t.Errorf("Push(%s) = %v, Room said %v", tt.k, ok, tt.want)
		}
	}
}

func TestSizeBound(t *testing.T) {
	q := Queue[string, int]{MaxSize: 100}
	if _, ok := q.Push("a", 0, 101, nil); ok {
		t.Fatal("an item over MaxSize was queued")
	}
	q.Push("a", 1, 60, nil)
	q.Push("a", 2, 30, nil)
	out, ok := q.Push("b", 3, 50, nil)
	if !ok || !slices.Equal(out, []int{2, 1}) {
		t.Fatalf("ok %v, dropped %v, want [2 1]", ok, out)
	}
	if q.Size() != 50 || q.Weight("a") != 0 {
		t.Fatalf("cost %d, a holds %d", q.Size(), q.Weight("a"))
	}
}

// TestSlotWeighs: with Slot, many small items weigh more than one large.
func TestSlotWeighs(t *testing.T) {
	q := Queue[string, int]{MaxItems: 11, Slot: 100}
	for i := range 10 {
		q.Push("small", i, 10, nil) // weighs 10 x 110
	}
	q.Push("large", 10, 1000, nil) // weighs 1,100
	if q.Weight("small") != 1100 || q.Weight("large") != 1100 {
		t.Fatalf("weights %d, %d", q.Weight("small"), q.Weight("large"))
	}
	if _, ok := q.Push("large", 11, 1, nil); ok {
		t.Fatal("a tie made room")
	}
	if out, ok := q.Push("other", 12, 1, nil); !ok || len(out) != 1 {
		t.Fatalf("ok %v, dropped %v", ok, out)
	}
}

// TestRingBounded: sources emptied by drops leave stale ring entries;
// however the pushes go and nobody pops, the ring stays near the number of
// sources.
func TestRingBounded(t *testing.T) {
	q := Queue[int, int]{MaxItems: 64}
	for i := range 100_000 {
		q.Push(i, i, 1, nil) // each a new source: drops another's only item
		if q.Sources() > 64 {
			t.Fatalf("%d sources in a queue of 64", q.Sources())
		}
		if l := len(q.ring); l > 2*64+17 {
			t.Fatalf("ring %d entries for %d sources", l, q.Sources())
		}
	}
}

// ref is the obvious version: a scan finds the largest source.
type ref struct {
	max   int
	flows map[int][]int
	order []int
}

func (r *ref) push(k, v int) bool {
	if len(r.flows) == 0 {
		r.flows = map[int][]int{}
	}
	n := 0
	for _, f := range r.flows {
		n += len(f)
	}
	if n >= r.max {
		big, bc := -1, -1
		for _, o := range r.order {
			if c := len(r.flows[o]) * unit(o); c > bc {
				big, bc = o, c
			}
		}
		if big == k || bc <= len(r.flows[k])*unit(k) {
			return false
		}
		f := r.flows[big]
		if r.flows[big] = f[:len(f)-1]; len(f) == 1 {
			delete(r.flows, big)
			r.order = slices.DeleteFunc(r.order, func(o int) bool { return o == big })
		}
	}
	if len(r.flows[k]) == 0 {
		r.order = append(r.order, k)
	}
	r.flows[k] = append(r.flows[k], v)
	return true
}

func (r *ref) pop() (int, bool) {
	if len(r.order) == 0 {
		return 0, false
	}
	k := r.order[0]
	r.order = r.order[1:]
	f := r.flows[k]
	v := f[0]
	if r.flows[k] = f[1:]; len(f) == 1 {
		delete(r.flows, k)
	} else {
		r.order = append(r.order, k)
	}
	return v, true
}

// unit is what an item of source k costs in TestMatchesScan: with at most
// 63 items a source, no two sources ever hold the same cost, so which is
// the largest is never a tie the two versions might break apart.
func unit(k int) int { return 1 + 64*k }

// TestMatchesScan compares the queue with a scanning version on random
// pushes and pops.
func TestMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		q := Queue[int, int]{MaxItems: 1 + rng.IntN(32)}
		r := ref{max: q.MaxItems}
		for i := range 2000 {
			if rng.IntN(3) == 0 {
				_, v, ok := q.Pop()
				w, wok := r.pop()
				if ok != wok || v != w {
					t.Fatalf("round %d op %d: pop %d %v, scan %d %v", round, i, v, ok, w, wok)
				}
				continue
			}
			k := rng.IntN(8)
			_, ok := q.Push(k, k*1e6+i, unit(k), nil)
			if wok := r.push(k, k*1e6+i); ok != wok {
				t.Fatalf("round %d op %d: push from %d %v, scan %v", round, i, k, ok, wok)
			}
			for k := range 8 {
				if got, want := q.Weight(k), len(r.flows[k])*unit(k); got != want {
					t.Fatalf("round %d op %d: source %d holds %d, scan %d", round, i, k, got, want)
				}
			}
		}
	}
}

// BenchmarkPushFull: a full queue of one item from each of 1,024 sources
// and a flood of new sources, each of whose items drops another's: the
// cost per item must not grow with the number of sources.
func BenchmarkPushFull(b *testing.B) {
	for _, n := range []int{16, 1024} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			q := Queue[int, int]{MaxItems: n}
			for i := range n {
				q.Push(i, i, 1, nil)
			}
			var out []int
			k := n
			for b.Loop() {
				out, _ = q.Push(k, k, 1, out[:0])
				k++
				if k%4 == 0 {
					q.Pop()
				}
			}
		})
	}
}
