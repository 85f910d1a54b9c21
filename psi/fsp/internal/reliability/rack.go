package reliability

import "time"

// OldestSent returns the entry in flight sent longest ago, or nil.
func (s *Sender[T]) OldestSent() *Entry[T] {
	var old *Entry[T]
	for e := range s.unacked() {
		if !e.Sent {
			break
		}
		if !e.InFlight {
			continue
		}
		if old == nil || e.SentAt.Before(old.SentAt) {
			old = e
		}
		if !e.Retrans {
			break // later first transmissions were sent later
		}
	}
	return old
}

// DetectLossBy declares lost the entries in flight sent before until that
// rule finds lost; rule also says when to ask again about one it did not
// (zero: not until more is acknowledged). It returns the earliest such
// time, or zero.
func (s *Sender[T]) DetectLossBy(now, until time.Time, rule func(e *Entry[T]) (lost bool, at time.Time), res *AckResult[T]) time.Time {
	*res = AckResult[T]{Acked: res.Acked[:0], Lost: res.Lost[:0]}
	var next time.Time
	for e := range s.unacked() {
		if !e.Sent {
			break
		}
		if !e.SentAt.Before(until) {
			if !e.Retrans {
				break // later first transmissions were sent later
			}
			continue
		}
		if !e.InFlight {
			continue
		}
		lost, at := rule(e)
		if lost {
			s.markLost(e)
			res.Lost = append(res.Lost, e)
			res.LostBytes += e.Bytes
			continue
		}
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}
