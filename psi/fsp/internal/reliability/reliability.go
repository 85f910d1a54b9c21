// Package reliability tracks FSP's sequence space: on the send side the
// packets in flight, their acknowledgement by cumulative acks and
// selective negative acknowledgements (SNACK gap lists), loss detection by
// packet and time thresholds and retransmission timeouts; on the receive
// side reordering, duplicate suppression and the gap list to report.
package reliability

import (
	"time"
)

// Gap is a SNACK gap descriptor: Gap sequence numbers missing, then Data
// received.
type Gap struct{ Gap, Data uint64 }

// PacketThreshold is how many later packets must be acknowledged before
// an unacknowledged one is declared lost (fast retransmit).
const PacketThreshold = 3

// Entry is one sequence number on the send side.
type Entry[T any] struct {
	Seq      uint64
	Value    T
	Bytes    int
	SentAt   time.Time
	Sent     bool // transmitted at least once
	InFlight bool // counted in bytes in flight
	Lost     bool // queued for retransmission
	Acked    bool
	Retrans  bool // transmitted more than once: no RTT sample (Karn)
	// Abandoned entries are never sent or retransmitted again; they
	// leave the window when a cumulative acknowledgement passes them.
	Abandoned bool
	sendOrder uint64
}

// Sender tracks the send sequence space. It is not safe for concurrent use.
type Sender[T any] struct {
	base     uint64          // lowest sequence number not yet acknowledged
	entries  ring[*Entry[T]] // entry i has Seq base+i
	unsent   int             // index of the first never-sent entry
	lost     []uint64        // sequence numbers to retransmit, ascending, from lostHead
	lostHead int
	inFlight int
	// sacked holds the selectively acknowledged sequence numbers above
	// base: exactly the acknowledged entries still in the window.
	sacked rangeSet
	order  uint64 // transmission counter

	largestAcked      uint64
	largestAckedOrder uint64
	anyAcked          bool
	free              []*Entry[T]
	retired           []*Entry[T] // left the window; recycled at the next OnAck
}

// NewSender returns a sender whose first sequence number is first.
func NewSender[T any](first uint64) *Sender[T] { return &Sender[T]{base: first} }

// Base is the lowest unacknowledged sequence number.
func (s *Sender[T]) Base() uint64 { return s.base }

// Next is the sequence number the next Push gets.
func (s *Sender[T]) Next() uint64 { return s.base + uint64(s.entries.Len()) }

// Len is the number of unacknowledged entries, sent or not.
func (s *Sender[T]) Len() int { return s.entries.Len() }

func (s *Sender[T]) at(i int) *Entry[T] { return s.entries.At(i) }

// pending is the retransmission queue.
func (s *Sender[T]) pending() []uint64 { return s.lost[s.lostHead:] }

// BytesInFlight is the bytes sent and neither acknowledged nor lost.
func (s *Sender[T]) BytesInFlight() int { return s.inFlight }

// Push appends a new entry and returns its sequence number.
func (s *Sender[T]) Push(v T, bytes int) uint64 {
	var e *Entry[T]
	if n := len(s.free); n > 0 {
		e, s.free = s.free[n-1], s.free[:n-1]
		*e = Entry[T]{}
	} else {
		e = new(Entry[T])
	}
	e.Seq, e.Value, e.Bytes = s.Next(), v, bytes
	s.entries.PushBack(e)
	return e.Seq
}

// Get returns the entry for seq, or nil.
func (s *Sender[T]) Get(seq uint64) *Entry[T] {
	if seq < s.base || seq-s.base >= uint64(s.entries.Len()) {
		return nil
	}
	return s.at(int(seq - s.base))
}

// HasPending reports whether a retransmission or a new entry awaits
// sending.
func (s *Sender[T]) HasPending() bool { return len(s.pending()) > 0 || s.unsent < s.entries.Len() }

// Unsent is the number of entries never sent.
func (s *Sender[T]) Unsent() int { return s.entries.Len() - s.unsent }

// HasRetransmission reports whether a lost entry awaits retransmission.
func (s *Sender[T]) HasRetransmission() bool { return len(s.pending()) > 0 }

// PeekNew returns the next never-sent entry, or nil.
func (s *Sender[T]) PeekNew() *Entry[T] {
	if s.unsent < s.entries.Len() {
		return s.at(s.unsent)
	}
	return nil
}

// NextToSend returns the next entry to transmit: retransmissions first.
// limit excludes new entries with Seq >= limit (flow control); lost ones
// are always allowed since the peer has already had room for them.
func (s *Sender[T]) NextToSend(limit uint64) *Entry[T] {
	for len(s.pending()) > 0 {
		seq := s.lost[s.lostHead]
		s.lostHead++
		if s.lostHead == len(s.lost) {
			s.lost, s.lostHead = s.lost[:0], 0
		}
		if e := s.Get(seq); e != nil && e.Lost && !e.Acked && !e.Abandoned {
			return e
		}
	}
	if e := s.PeekNew(); e != nil && e.Seq < limit {
		return e
	}
	return nil
}

// PeekNext returns the entry NextToSend(limit) would return, without
// taking it.
func (s *Sender[T]) PeekNext(limit uint64) *Entry[T] {
	for _, seq := range s.pending() {
		if e := s.Get(seq); e != nil && e.Lost && !e.Acked && !e.Abandoned {
			return e
		}
	}
	if e := s.PeekNew(); e != nil && e.Seq < limit {
		return e
	}
	return nil
}

// OnSent records a transmission of e.
func (s *Sender[T]) OnSent(e *Entry[T], now time.Time) {
	if e.Sent {
		e.Retrans = true
	} else if s.unsent < s.entries.Len() && s.at(s.unsent) == e {
		s.unsent++
	}
	e.Sent, e.Lost, e.SentAt = true, false, now
	s.order++
	e.sendOrder = s.order
	if !e.InFlight {
		e.InFlight = true
		s.inFlight += e.Bytes
	}
}

// AckResult is what one acknowledgement did.
type AckResult[T any] struct {
	// Acked are the newly acknowledged entries; those that left the
	// window are recycled by the next call to OnAck.
	Acked []*Entry[T]
	// AckedBytes counts acknowledged bytes that were in flight.
	AckedBytes int
	// RTTSample is valid when HasRTT: the time since the newest newly
	// acknowledged entry was sent, if it was sent only once.
	RTTSample time.Duration
	HasRTT    bool
	// RTTEntry is the entry the sample was taken from, when HasRTT.
	RTTEntry *Entry[T]
	// Lost are entries newly declared lost.
	Lost []*Entry[T]
	// LostBytes counts newly lost bytes.
	LostBytes int
	// LargestAcked is the largest acknowledged sequence number.
	LargestAcked uint64
	// Progress reports whether the cumulative point advanced.
	Progress bool
}

// OnAck processes a cumulative acknowledgement (everything below expected
// arrived) and the gap list that follows expected. res is reset and
// filled; its slices are reused.
func (s *Sender[T]) OnAck(now time.Time, expected uint64, gaps []Gap, latest uint64, lossDelay time.Duration, res *AckResult[T]) {
	s.free = append(s.free, s.retired...)
	clear(s.retired)
	s.retired = s.retired[:0]
	*res = AckResult[T]{Acked: res.Acked[:0], Lost: res.Lost[:0]}
	if expected > s.Next() {
		expected = s.Next() // acknowledges data never sent: ignore the excess
	}
	var newest *Entry[T]
	ack := func(e *Entry[T]) {
		if e.Acked {
			return
		}
		if !e.Sent {
			if e.Abandoned { // given up before it was ever sent
				e.Acked = true
				res.Acked = append(res.Acked, e)
			}
			return
		}
		e.Acked = true
		if e.InFlight {
			e.InFlight = false
			s.inFlight -= e.Bytes
			res.AckedBytes += e.Bytes
		}
		if newest == nil || e.sendOrder > newest.sendOrder {
			newest = e
		}
		res.Acked = append(res.Acked, e)
	}
	// Selective part: ranges received beyond the first gap. Only the
	// parts not acknowledged before are visited, so a gap list repeated
	// while a hole stays open costs O(ranges), not O(window). Entries
	// from base to base+unsent are all sent or abandoned: ack marks them.
	seq, top, at := expected, s.base+uint64(s.unsent), 0
	for _, g := range gaps {
		if g.Gap >= top-min(seq, top) {
			break
		}
		seq += g.Gap
		hi := top
		if g.Data < top-seq {
			hi = seq + g.Data
		}
		if lo := max(seq, s.base); lo < hi {
			at = s.sacked.add(at, lo, hi, func(lo, hi uint64) {
				for q := lo; q < hi; q++ {
					ack(s.at(int(q - s.base)))
				}
			})
		}
		seq = hi
	}
	// Cumulative part.
	for s.base < expected && s.entries.Len() > 0 {
		e := s.at(0)
		ack(e)
		if !e.Acked { // never sent: cannot be acknowledged
			break
		}
		s.retired = append(s.retired, e)
		s.entries.PopFront()
		s.base++
		if s.unsent > 0 {
			s.unsent--
		}
		res.Progress = true
	}
	s.sacked.RemoveBelow(s.base)
	if s.entries.Len() == 0 {
		s.unsent = 0
	}
	if newest != nil {
		if !s.anyAcked || newest.sendOrder > s.largestAckedOrder {
			s.largestAckedOrder = newest.sendOrder
		}
		if !s.anyAcked || newest.Seq > s.largestAcked {
			s.largestAcked = newest.Seq
		}
		s.anyAcked = true
		if !newest.Retrans {
			res.RTTSample, res.HasRTT, res.RTTEntry = now.Sub(newest.SentAt), true, newest
		}
	}
	_ = latest
	res.LargestAcked = s.largestAcked
	s.detectLoss(now, lossDelay, res)
}

// DetectLoss declares lost the in-flight entries sent before the largest
// acknowledged one that are PacketThreshold behind it or older than
// lossDelay. It returns the earliest time a remaining entry could be
// declared lost by time, or zero.
func (s *Sender[T]) DetectLoss(now time.Time, lossDelay time.Duration, res *AckResult[T]) time.Time {
	*res = AckResult[T]{Acked: res.Acked[:0], Lost: res.Lost[:0]}
	return s.detectLoss(now, lossDelay, res)
}

func (s *Sender[T]) detectLoss(now time.Time, lossDelay time.Duration, res *AckResult[T]) time.Time {
	var next time.Time
	if !s.anyAcked {
		return next
	}
	// Only the unacknowledged entries, between the acknowledged spans,
	// can be lost: the walk skips the spans.
	for e := range s.unacked() {
		if e.Seq > s.largestAcked || !e.Sent {
			break
		}
		if !e.InFlight || e.sendOrder > s.largestAckedOrder {
			continue
		}
		if s.largestAcked-e.Seq >= PacketThreshold || now.Sub(e.SentAt) >= lossDelay {
			s.markLost(e)
			res.Lost = append(res.Lost, e)
			res.LostBytes += e.Bytes
			continue
		}
		if t := e.SentAt.Add(lossDelay); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}

// unacked yields the entries not yet acknowledged, in sequence order.
func (s *Sender[T]) unacked() func(yield func(*Entry[T]) bool) {
	return func(yield func(*Entry[T]) bool) {
		i, n := 0, s.entries.Len()
		for _, sp := range s.sacked.s {
			for ; i < n && s.base+uint64(i) < sp.lo; i++ {
				if !yield(s.at(i)) {
					return
				}
			}
			i = max(i, int(sp.hi-s.base))
		}
		for ; i < n; i++ {
			if !yield(s.at(i)) {
				return
			}
		}
	}
}

func (s *Sender[T]) markLost(e *Entry[T]) {
	if e.InFlight {
		e.InFlight = false
		s.inFlight -= e.Bytes
	}
	if !e.Lost {
		e.Lost = true
		if e.Abandoned {
			return // lost, but not to be retransmitted
		}
		// Keep the queue ascending: most losses arrive in order.
		i := len(s.lost)
		for i > s.lostHead && s.lost[i-1] > e.Seq {
			i--
		}
		s.lost = append(s.lost, 0)
		copy(s.lost[i+1:], s.lost[i:])
		s.lost[i] = e.Seq
	}
}

// Abandon gives up on every unacknowledged entry below seq: none is sent
// or retransmitted again, and f is called for each newly abandoned one.
// Entries already in flight stay counted until acknowledged or declared
// lost. The receiver must be told to skip them (the cumulative
// acknowledgement only passes them once it has).
func (s *Sender[T]) Abandon(seq uint64, f func(*Entry[T])) {
	for e := range s.unacked() {
		if e.Seq >= seq {
			break
		}
		if e.Abandoned {
			continue
		}
		e.Abandoned = true
		f(e)
	}
	if seq > s.base {
		s.unsent = max(s.unsent, int(min(seq-s.base, uint64(s.entries.Len()))))
	}
	k := 0
	s.lost = s.lost[s.lostHead:]
	s.lostHead = 0
	for _, q := range s.lost {
		if q >= seq {
			s.lost[k] = q
			k++
		}
	}
	s.lost = s.lost[:k]
}

// PopUnsent removes the newest entry if it was never sent and returns
// it; the entry is recycled by the next OnAck. It returns nil if the
// newest entry was sent (or there is none): sequence numbers that left
// stay in the window.
func (s *Sender[T]) PopUnsent() *Entry[T] {
	n := s.entries.Len()
	if n == 0 || s.unsent >= n || s.at(n-1).Sent {
		return nil
	}
	e := s.entries.PopBack()
	s.retired = append(s.retired, e)
	return e
}

// LastLost returns the largest sequence number below seq that is queued
// for retransmission.
func (s *Sender[T]) LastLost(seq uint64) (uint64, bool) {
	for i := len(s.lost) - 1; i >= s.lostHead; i-- {
		q := s.lost[i]
		if q >= seq {
			continue
		}
		if e := s.Get(q); e != nil && e.Lost && !e.Acked && !e.Abandoned {
			return q, true
		}
	}
	return 0, false
}

// Probe queues for retransmission, without taking them for lost, the
// newest in-flight entry and, if n > 1, the oldest: a tail-loss probe
// (RFC 9002 section 6.2.4) that repairs a lost last packet, or draws an
// acknowledgement that reveals the losses. It returns how many.
func (s *Sender[T]) Probe(n int) int {
	var newest *Entry[T]
	for i := s.entries.Len() - 1; i >= 0; i-- {
		if e := s.at(i); e.InFlight && !e.Acked && !e.Abandoned {
			newest = e
			break
		}
	}
	if newest == nil || n < 1 {
		return 0
	}
	k := 1
	if old := s.OldestInFlight(); n > 1 && old != nil && old != newest && !old.Abandoned {
		s.markLost(old)
		k++
	}
	s.markLost(newest)
	return k
}

// NewestSent returns the entry with the highest sequence number sent so
// far, acknowledged or not, or nil.
func (s *Sender[T]) NewestSent() *Entry[T] {
	if s.unsent == 0 {
		return nil
	}
	return s.at(s.unsent - 1)
}

// OldestInFlight returns the in-flight entry sent longest ago, or nil.
func (s *Sender[T]) OldestInFlight() *Entry[T] {
	var old *Entry[T]
	for e := range s.unacked() {
		if !e.Sent {
			break
		}
		if e.InFlight && (old == nil || e.sendOrder < old.sendOrder) {
			old = e
		}
	}
	return old
}

// OnTimeout handles a retransmission timeout: the oldest unacknowledged
// entries (up to n) are queued for retransmission. It returns how many.
func (s *Sender[T]) OnTimeout(n int) int {
	k := 0
	for e := range s.unacked() {
		if k >= n || !e.Sent {
			break
		}
		if !e.Lost {
			s.markLost(e)
			k++
		}
	}
	return k
}

// Receiver tracks the receive sequence space: it buffers out-of-order
// entries, drops duplicates and releases entries in order. It is not safe
// for concurrent use.
type Receiver[T any] struct {
	expected uint64
	largest  uint64
	// slots holds the window from expected: slot i is seq expected+i.
	// It grows to the farthest entry received and keeps its capacity.
	slots ring[slot[T]]
	held  int      // entries in slots
	recvd rangeSet // the held sequence numbers, for the gap list
}

type slot[T any] struct {
	v  T
	ok bool
}

// NewReceiver returns a receiver expecting first.
func NewReceiver[T any](first uint64) *Receiver[T] {
	return &Receiver[T]{expected: first, largest: first - 1}
}

// Expected is the next in-order sequence number.
func (r *Receiver[T]) Expected() uint64 { return r.expected }

// Largest is the largest sequence number received.
func (r *Receiver[T]) Largest() uint64 { return r.largest }

// Buffered is the number of entries held and not yet popped.
func (r *Receiver[T]) Buffered() int { return r.held }

// Span is the number of sequence numbers from Expected up to the
// farthest entry held: the slots the window uses, filled or not.
func (r *Receiver[T]) Span() int { return r.slots.Len() }

// HasGaps reports whether entries beyond a missing one are held.
func (r *Receiver[T]) HasGaps() bool {
	n := r.recvd.Len()
	return n > 1 || n == 1 && r.recvd.s[0].lo > r.expected
}

// Insert offers seq. It returns false for a duplicate or an entry at or
// beyond limit (outside the advertised window). In-order entries are
// returned by Pop.
func (r *Receiver[T]) Insert(seq uint64, v T, limit uint64) bool {
	if seq < r.expected || seq >= limit {
		return false
	}
	off := seq - r.expected
	for uint64(r.slots.Len()) <= off {
		r.slots.PushBack(slot[T]{})
	}
	sl := r.slots.Ptr(int(off))
	if sl.ok {
		return false
	}
	sl.v, sl.ok = v, true
	r.held++
	r.recvd.Add(seq, seq+1, nil)
	if seq > r.largest || r.largest+1 == r.expected {
		r.largest = seq
	}
	return true
}

// Pop returns the next in-order entry, if it has arrived.
func (r *Receiver[T]) Pop() (T, bool) {
	if r.slots.Len() == 0 || !r.slots.Ptr(0).ok {
		var zero T
		return zero, false
	}
	v := r.slots.PopFront().v
	r.held--
	r.expected++
	r.recvd.RemoveBelow(r.expected)
	return v, true
}

// Gaps appends to dst the gap list from Expected up to Largest, at most
// max descriptors. It costs O(descriptors), whatever the window.
func (r *Receiver[T]) Gaps(dst []Gap, max int) []Gap {
	seq := r.expected
	for _, sp := range r.recvd.s {
		if len(dst) >= max {
			break
		}
		dst = append(dst, Gap{Gap: sp.lo - seq, Data: sp.hi - sp.lo})
		seq = sp.hi
	}
	return dst
}

// SkipTo gives up on everything below seq: buffered entries below it are
// passed to f and forgotten, and seq becomes the expected sequence number.
// It does nothing if seq is not beyond Expected.
func (r *Receiver[T]) SkipTo(seq uint64, f func(T)) {
	if seq <= r.expected {
		return
	}
	for r.slots.Len() > 0 && r.expected < seq {
		if sl := r.slots.PopFront(); sl.ok {
			r.held--
			f(sl.v)
		}
		r.expected++
	}
	r.expected = seq
	r.recvd.RemoveBelow(seq)
	if r.largest+1 < seq {
		r.largest = seq - 1
	}
}

// Strip replaces every held entry v by f(v), keeping which sequence
// numbers were received: a closed connection frees the buffers but still
// acknowledges what it had.
func (r *Receiver[T]) Strip(f func(T) T) {
	for i := range r.slots.Len() {
		if sl := r.slots.Ptr(i); sl.ok {
			sl.v = f(sl.v)
		}
	}
}

// Drain calls f for every buffered entry and forgets them.
func (r *Receiver[T]) Drain(f func(T)) {
	for i := range r.slots.Len() {
		if sl := r.slots.Ptr(i); sl.ok {
			f(sl.v)
		}
	}
	r.slots = ring[slot[T]]{} // a drained receiver is done: free the window
	r.held = 0
	r.recvd = rangeSet{}
}

// Oversized reports whether Compact would free memory now: the window,
// the recycled entries or the retransmission queue hold far more room
// than the entries in flight need.
func (s *Sender[T]) Oversized() bool {
	keep := s.keepFree()
	return s.entries.Oversized() || len(s.free)+len(s.retired) > keep || cap(s.free) > 4*keep ||
		cap(s.lost) > 4*max(minRing, len(s.lost)) || cap(s.retired) > 4*max(minRing, len(s.retired)) ||
		s.sacked.oversized()
}

// keepFree is how many recycled entries Compact keeps: enough to refill
// the current window.
func (s *Sender[T]) keepFree() int { return max(minRing, s.entries.Len()) }

// Compact gives back the memory a past burst left: it shrinks the window
// and the retransmission queue to what they hold and keeps only as many
// recycled entries as the window has. Call it once traffic has been low
// for a while, and only once the last AckResult is no longer used (its
// entries are recycled); a later burst allocates again.
func (s *Sender[T]) Compact() {
	s.free = append(s.free, s.retired...)
	clear(s.retired)
	s.retired = s.retired[:0]
	s.entries.Shrink()
	keep := s.keepFree()
	if len(s.free) > keep {
		clear(s.free[keep:])
		s.free = s.free[:keep]
	}
	if cap(s.free) > 4*keep {
		s.free = append([]*Entry[T](nil), s.free...)
	}
	if cap(s.lost) > 4*max(minRing, len(s.lost)) {
		s.lost, s.lostHead = append([]uint64(nil), s.lost[s.lostHead:]...), 0
	}
	if cap(s.retired) > 4*max(minRing, len(s.retired)) {
		s.retired = append([]*Entry[T](nil), s.retired...)
	}
	s.sacked.shrink()
}

// Oversized reports whether Compact would free memory now.
func (r *Receiver[T]) Oversized() bool { return r.slots.Oversized() || r.recvd.oversized() }

// Compact shrinks the window's buffer to the entries it holds, giving
// back the memory a past burst or loss episode left.
func (r *Receiver[T]) Compact() {
	r.slots.Shrink()
	r.recvd.shrink()
}
