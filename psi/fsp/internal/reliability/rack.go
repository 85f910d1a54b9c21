package reliability

import "time"

// OldestSentTime returns the send time of the oldest entry in flight, or
// the zero time if none is.
func (s *Sender[T]) OldestSentTime() time.Time {
	var t time.Time
	for e := range s.unacked() {
		if !e.Sent {
			break
		}
		if !e.InFlight {
			continue
		}
		if t.IsZero() || e.SentAt.Before(t) {
			t = e.SentAt
		}
		if !e.Retrans {
			break // later first transmissions were sent later
		}
	}
	return t
}

// DetectLossSentBefore declares lost the entries in flight that were sent
// before the given time and at least lossDelay ago: something sent after
// them, elsewhere, was acknowledged (RACK, RFC 8985). It returns the
// earliest time another entry sent before then is lost by that rule, or
// zero.
func (s *Sender[T]) DetectLossSentBefore(now, before time.Time, lossDelay time.Duration, res *AckResult[T]) time.Time {
	*res = AckResult[T]{Acked: res.Acked[:0], Lost: res.Lost[:0]}
	var next time.Time
	for e := range s.unacked() {
		if !e.Sent {
			break
		}
		if !e.SentAt.Before(before) {
			if !e.Retrans {
				break
			}
			continue
		}
		if !e.InFlight {
			continue
		}
		if now.Sub(e.SentAt) >= lossDelay {
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
