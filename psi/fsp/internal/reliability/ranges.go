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
func (r *rangeSet) Add(lo, hi uint64, f func(lo, hi uint64)) {
	if lo >= hi {
		return
	}
	n := len(r.s)
	if n == 0 || r.s[n-1].hi < lo { // beyond the top: append
		r.s = append(r.s, span{lo, hi})
		if f != nil {
			f(lo, hi)
		}
		return
	}
	if last := &r.s[n-1]; last.lo <= lo && last.hi >= lo { // extends the top
		if hi > last.hi {
			if f != nil {
				f(last.hi, hi)
			}
			last.hi = hi
		}
		return
	}
	// First span that touches or follows [lo, hi): its hi >= lo.
	i := sort.Search(n, func(k int) bool { return r.s[k].hi >= lo })
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
		return
	}
	merged := span{min(lo, r.s[i].lo), max(hi, r.s[j-1].hi)}
	r.s[i] = merged
	k := copy(r.s[i+1:], r.s[j:])
	r.s = r.s[:i+1+k]
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
