package reliability

// ring is a double-ended queue on a power-of-two circular buffer. Popping
// keeps the capacity, so a steady window costs no allocations.
type ring[T any] struct {
	buf     []T
	head, n int
}

func (q *ring[T]) Len() int { return q.n }

// At returns the i-th element from the front; i must be below Len.
func (q *ring[T]) At(i int) T { return q.buf[(q.head+i)&(len(q.buf)-1)] }

// Ptr returns a pointer to the i-th element, valid until the next push.
func (q *ring[T]) Ptr(i int) *T { return &q.buf[(q.head+i)&(len(q.buf)-1)] }

func (q *ring[T]) PushBack(v T) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = v
	q.n++
}

// PopFront removes the front element, zeroing its slot.
func (q *ring[T]) PopFront() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
	if q.n == 0 {
		q.head = 0
	}
	return v
}

// Reset empties the queue and keeps its capacity.
func (q *ring[T]) Reset() {
	clear(q.buf)
	q.head, q.n = 0, 0
}

func (q *ring[T]) grow() {
	c := max(16, 2*len(q.buf))
	buf := make([]T, c)
	for i := range q.n {
		buf[i] = q.At(i)
	}
	q.buf, q.head = buf, 0
}
