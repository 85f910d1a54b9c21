// Package fairq is a bounded queue shared fairly between sources: each
// source has its own FIFO, Pop serves the sources in turn, and a full
// queue makes room by dropping the newest items of the source holding the
// most. A listener keys it by the sender's prefix, so a flood from one
// prefix delays another's packet by one item a busy source, and never
// shuts it out.
//
// Every operation costs O(log n) in the number of sources with items
// queued (a heap finds the largest), so a flood from many (spoofed)
// sources cannot make each packet cost a scan of the queue.
package fairq

import "container/heap"

// Queue holds at most MaxItems items of total size at most MaxSize
// (zero: no bound of that kind). Sources are compared by weight: the size
// of their items plus Slot for each, so that both bounds count. It is not
// safe for concurrent use. The zero value is an unbounded, empty queue.
type Queue[K comparable, T any] struct {
	MaxItems int
	MaxSize  int
	Slot     int

	flows map[K]*flow[K, T]
	heap  byWeight[K, T] // flows with items, heaviest first
	ring  []*flow[K, T]  // serving order from ring[rh]; may hold done flows
	rh    int
	done  int // flows in ring[rh:] that were emptied by a drop
	n     int
	size  int
}

type flow[K comparable, T any] struct {
	key    K
	items  []item[T]
	head   int  // items[head:] are queued
	weight int  // their sizes plus Slot each
	hi     int  // index in the heap
	gone   bool // emptied by a drop: its ring entry is stale
}

type item[T any] struct {
	v    T
	size int
}

// Len returns the number of items queued.
func (q *Queue[K, T]) Len() int { return q.n }

// Size returns the total size of the items queued.
func (q *Queue[K, T]) Size() int { return q.size }

// Sources returns the number of sources with items queued.
func (q *Queue[K, T]) Sources() int { return len(q.heap) }

// Weight returns what source k holds: its items' size plus Slot each.
func (q *Queue[K, T]) Weight(k K) int {
	if f := q.flows[k]; f != nil {
		return f.weight
	}
	return 0
}

// Push queues v of the given size from source k. While the queue would
// pass a bound, the newest item of the heaviest source is dropped to make
// room, if that source weighs more than k; else v is refused. Dropped
// items are appended to out, which Push returns with whether v was
// queued. An item larger than MaxSize is refused.
func (q *Queue[K, T]) Push(k K, v T, size int, out []T) ([]T, bool) {
	if q.MaxSize > 0 && size > q.MaxSize {
		return out, false
	}
	mine := q.Weight(k)
	for q.full(size) {
		big := q.heap[0]
		if big.key == k || big.weight <= mine {
			return out, false
		}
		out = append(out, q.dropNewest(big))
	}
	f := q.flows[k]
	if f == nil {
		if q.flows == nil {
			q.flows = make(map[K]*flow[K, T])
		}
		f = &flow[K, T]{key: k}
		q.flows[k] = f
		heap.Push(&q.heap, f)
		q.ring = append(q.ring, f)
	}
	f.items = append(f.items, item[T]{v, size})
	f.weight += size + q.Slot
	heap.Fix(&q.heap, f.hi)
	q.n++
	q.size += size
	return out, true
}

// Room reports whether Push would take an item of the given size from k
// at once or by dropping from a heavier source's newest item (exact for a
// queue bounded by items; by size, Push may drop several and still find
// k the heaviest).
func (q *Queue[K, T]) Room(k K, size int) bool {
	if q.MaxSize > 0 && size > q.MaxSize {
		return false
	}
	return !q.full(size) || (q.heap[0].key != k && q.heap[0].weight > q.Weight(k))
}

// full reports whether adding an item of the given size passes a bound.
func (q *Queue[K, T]) full(size int) bool {
	return q.n > 0 && ((q.MaxItems > 0 && q.n >= q.MaxItems) ||
		(q.MaxSize > 0 && q.size+size > q.MaxSize))
}

// dropNewest removes and returns f's newest item.
func (q *Queue[K, T]) dropNewest(f *flow[K, T]) T {
	last := len(f.items) - 1
	it := f.items[last]
	f.items[last] = item[T]{}
	f.items = f.items[:last]
	q.taken(f, it.size)
	if f.head == len(f.items) {
		q.remove(f)
		f.gone = true
		q.done++
		q.compactRing()
	} else {
		heap.Fix(&q.heap, f.hi)
	}
	return it.v
}

// Pop removes and returns the oldest item of the source whose turn it is.
func (q *Queue[K, T]) Pop() (k K, v T, ok bool) {
	if q.n == 0 {
		return k, v, false
	}
	var f *flow[K, T]
	for {
		f = q.ring[q.rh]
		q.ring[q.rh] = nil
		q.rh++
		if !f.gone {
			break
		}
		q.done--
	}
	it := f.items[f.head]
	f.items[f.head] = item[T]{}
	f.head++
	q.taken(f, it.size)
	if f.head == len(f.items) {
		q.remove(f)
	} else {
		if f.head > len(f.items)/2 {
			f.items = f.items[:copy(f.items, f.items[f.head:])]
			f.head = 0
		}
		heap.Fix(&q.heap, f.hi)
		q.ring = append(q.ring, f)
	}
	q.compactRing()
	return f.key, it.v, true
}

// taken uncounts an item of the given size of f.
func (q *Queue[K, T]) taken(f *flow[K, T], size int) {
	f.weight -= size + q.Slot
	q.n--
	q.size -= size
}

// remove forgets the emptied flow f.
func (q *Queue[K, T]) remove(f *flow[K, T]) {
	heap.Remove(&q.heap, f.hi)
	delete(q.flows, f.key)
}

// compactRing reclaims the ring's served prefix and stale entries once
// they outnumber the live ones, so its length stays within twice the
// number of sources (plus a constant) whatever the pattern of drops.
func (q *Queue[K, T]) compactRing() {
	live := len(q.ring) - q.rh - q.done
	if q.rh+q.done <= live+16 {
		return
	}
	r := q.ring[:0]
	for _, f := range q.ring[q.rh:] {
		if !f.gone {
			r = append(r, f)
		}
	}
	clear(q.ring[len(r):])
	q.ring, q.rh, q.done = r, 0, 0
}

// Drain drops every item.
func (q *Queue[K, T]) Drain() {
	*q = Queue[K, T]{MaxItems: q.MaxItems, MaxSize: q.MaxSize, Slot: q.Slot}
}

// byWeight is a max-heap of flows by weight (container/heap).
type byWeight[K comparable, T any] []*flow[K, T]

func (h byWeight[K, T]) Len() int           { return len(h) }
func (h byWeight[K, T]) Less(i, j int) bool { return h[i].weight > h[j].weight }
func (h byWeight[K, T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hi, h[j].hi = i, j
}
func (h *byWeight[K, T]) Push(x any) {
	f := x.(*flow[K, T])
	f.hi = len(*h)
	*h = append(*h, f)
}
func (h *byWeight[K, T]) Pop() any {
	old := *h
	f := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return f
}
