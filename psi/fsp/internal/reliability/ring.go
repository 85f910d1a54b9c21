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
	c := max(minRing, 2*len(q.buf))
	buf := make([]T, c)
	for i := range q.n {
		buf[i] = q.At(i)
	}
	q.buf, q.head = buf, 0
}

// minRing is the smallest buffer a ring allocates.
const minRing = 16

// Oversized reports whether Shrink would free memory now.
func (q *ring[T]) Oversized() bool { return len(q.buf) > ringFit(q.n) }

// Shrink moves the elements to a buffer sized for them (twice their
// number, at least minRing slots) if the current one is over four times
// that, and frees the buffer of an empty ring. A ring grown by a burst
// thus gives its memory back once the burst is over.
func (q *ring[T]) Shrink() {
	if !q.Oversized() {
		return
	}
	if q.n == 0 {
		q.buf, q.head = nil, 0
		return
	}
	buf := make([]T, fitSize(q.n))
	for i := range q.n {
		buf[i] = q.At(i)
	}
	q.buf, q.head = buf, 0
}

// fitSize is the power of two, at least minRing, that holds twice n.
func fitSize(n int) int {
	c := minRing
	for c < 2*n {
		c *= 2
	}
	return c
}

// ringFit is the largest buffer Shrink leaves for n elements: four times
// their fit, or nothing at all for an empty ring past minRing.
func ringFit(n int) int {
	if n == 0 {
		return minRing
	}
	return 4 * fitSize(n)
}

// PopBack removes the back element, zeroing its slot.
func (q *ring[T]) PopBack() T {
	var zero T
	i := (q.head + q.n - 1) & (len(q.buf) - 1)
	v := q.buf[i]
	q.buf[i] = zero
	q.n--
	if q.n == 0 {
		q.head = 0
	}
	return v
}
