package reliability

import "sort"

// span is the half-open interval [lo, hi) of sequence numbers.
type span struct{ lo, hi uint64 }

// rangeSet is a set of sequence numbers kept as a sorted slice of
// disjoint, non-adjacent spans. Operations cost O(spans), and appending at
// the top (the common case) O(1).
type rangeSet struct{ s []span }

func (r *rangeSet) Len() int { return len(r.s) }

// Add inserts [lo, hi) and calls f, if not nil, for each sub-interval that
// was not already in the set, in ascending order.
func (r *rangeSet) Add(lo, hi uint64, f func(lo, hi uint64)) { r.add(0, lo, hi, f) }

// add is Add for an interval known to lie above every span before index
// from: ascending intervals pass the index it returns (the span that now
// holds [lo, hi)) to the next call and cost O(1) each when they repeat.
func (r *rangeSet) add(from int, lo, hi uint64, f func(lo, hi uint64)) int {
	if lo >= hi {
		return from
	}
	n := len(r.s)
	if n == 0 || r.s[n-1].hi < lo { // beyond the top: append
		r.s = append(r.s, span{lo, hi})
		if f != nil {
			f(lo, hi)
		}
		return n
	}
	if last := &r.s[n-1]; last.lo <= lo && last.hi >= lo { // extends the top
		if hi > last.hi {
			if f != nil {
				f(last.hi, hi)
			}
			last.hi = hi
		}
		return n - 1
	}
	// First span that touches or follows [lo, hi): its hi >= lo.
	i := from
	if i >= n || r.s[i].hi < lo {
		i += sort.Search(n-i, func(k int) bool { return r.s[i+k].hi >= lo })
	}
	// Spans i..j-1 touch or overlap [lo, hi).
	j := i
	for j < n && r.s[j].lo <= hi {
		j++
	}
	if f != nil {
		at := lo
		for k := i; k < j; k++ {
			if r.s[k].lo > at {
				f(at, r.s[k].lo)
			}
			at = max(at, r.s[k].hi)
		}
		if at < hi {
			f(at, hi)
		}
	}
	if i == j { // no overlap: insert
		r.s = append(r.s, span{})
		copy(r.s[i+1:], r.s[i:])
		r.s[i] = span{lo, hi}
		return i
	}
	if j == i+1 && r.s[i].lo <= lo && r.s[i].hi >= hi {
		return i // already held: the repeated gap list
	}
	merged := span{min(lo, r.s[i].lo), max(hi, r.s[j-1].hi)}
	r.s[i] = merged
	k := copy(r.s[i+1:], r.s[j:])
	r.s = r.s[:i+1+k]
	return i
}

// Contains reports whether seq is in the set.
func (r *rangeSet) Contains(seq uint64) bool {
	i := sort.Search(len(r.s), func(k int) bool { return r.s[k].hi > seq })
	return i < len(r.s) && r.s[i].lo <= seq
}

// RemoveBelow drops every number below seq.
func (r *rangeSet) RemoveBelow(seq uint64) {
	i := 0
	for i < len(r.s) && r.s[i].hi <= seq {
		i++
	}
	if i > 0 {
		k := copy(r.s, r.s[i:])
		clear(r.s[k:])
		r.s = r.s[:k]
	}
	if len(r.s) > 0 && r.s[0].lo < seq {
		r.s[0].lo = seq
	}
}

// Reset empties the set and keeps its capacity.
func (r *rangeSet) Reset() { r.s = r.s[:0] }

func (r *rangeSet) oversized() bool { return cap(r.s) > 4*max(minRing, len(r.s)) }

// shrink reallocates the spans if they use a quarter of their room or less.
func (r *rangeSet) shrink() {
	if r.oversized() {
		r.s = append([]span(nil), r.s...)
	}
}
