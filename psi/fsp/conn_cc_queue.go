package fsp

import "time"

// The session-level queues that keep a shared path's per-acknowledgement
// work independent of how many connections share it (conn_cc.go): a
// waiting list of the members the window held back, walked only when the
// window opens, as a QUIC connection keeps its blocked streams; and a
// heap of the members' oldest packets in flight, ordered by when an
// acknowledgement shows them lost or due, so an acknowledgement visits
// only the members it has news for. Both are used under the group's lock.

// block notes s as held back by p's window, at the end of its waiting
// list unless already on it.
func (p *ccPath) block(s *ccShare) {
	s.blocked = true
	if s.queued == p {
		return
	}
	s.queued = p
	p.wait = append(p.wait, s)
	if len(p.wait) > 2*len(p.members)+64 {
		p.compactWait()
	}
}

// compactWait drops the entries of members that left the list (they
// moved path, left the session or were woken) while queued.
func (p *ccPath) compactWait() {
	q := p.wait[:0]
	for _, m := range p.wait[p.waitHead:] {
		if m.queued == p {
			q = append(q, m)
		}
	}
	clear(p.wait[len(q):])
	p.wait, p.waitHead = q, 0
}

// popWaiting takes the next member that still waits off p's list, nil if
// none does.
func (p *ccPath) popWaiting() *ccShare {
	for p.waitHead < len(p.wait) {
		m := p.wait[p.waitHead]
		p.wait[p.waitHead] = nil
		p.waitHead++
		if m.queued != p {
			continue // a stale entry
		}
		m.queued = nil
		if m.blocked {
			return m
		}
	}
	p.wait, p.waitHead = p.wait[:0], 0
	return nil
}

// unpop puts s, just taken by popWaiting, back at the head of p's list.
func (p *ccPath) unpop(s *ccShare) {
	s.queued = p
	if p.waitHead > 0 {
		p.waitHead--
		p.wait[p.waitHead] = s
		return
	}
	p.wait = append(p.wait, nil)
	copy(p.wait[1:], p.wait)
	p.wait[0] = s
}

// key is when an acknowledgement of a packet sent then or later has
// news for b: b is lost (it asked for an immediate acknowledgement) or
// its time threshold starts (rackPacket.check).
func (b rackPacket) key() time.Time {
	if b.asked {
		return b.sent.Add(b.reo)
	}
	return b.sent.Add(1) // a packet sent strictly later
}

// rackSet files s under its oldest packet in flight, base, in p's heap
// (or takes it out if base is zero), and clears what it was told of the
// packet before.
func (p *ccPath) rackSet(s *ccShare, base rackPacket) {
	s.base, s.lostKick, s.armedAt = base, false, time.Time{}
	if base.sent.IsZero() || base.bulk && !base.asked {
		p.rackRemove(s)
		return
	}
	s.key = base.key()
	if s.hidx == 0 {
		p.rack = append(p.rack, s)
		s.hidx = len(p.rack)
		p.rackUp(s.hidx - 1)
		return
	}
	p.rackFix(s.hidx - 1)
}

// rackRemove takes s out of p's heap, if it is in it.
func (p *ccPath) rackRemove(s *ccShare) {
	if s.hidx == 0 {
		return
	}
	i, last := s.hidx-1, len(p.rack)-1
	s.hidx = 0
	if i != last {
		p.rack[i] = p.rack[last]
		p.rack[i].hidx = i + 1
	}
	p.rack[last] = nil
	p.rack = p.rack[:last]
	if i != last {
		p.rackFix(i)
	}
}

// rackDue takes off p's heap and returns a member whose oldest packet an
// acknowledgement of one sent at acked has news for, nil if none.
func (p *ccPath) rackDue(acked time.Time) *ccShare {
	if len(p.rack) == 0 || p.rack[0].key.After(acked) {
		return nil
	}
	s := p.rack[0]
	p.rackRemove(s)
	return s
}

func (p *ccPath) rackFix(i int) {
	if !p.rackDown(i) {
		p.rackUp(i)
	}
}

func (p *ccPath) rackSwap(i, j int) {
	h := p.rack
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i+1, j+1
}

func (p *ccPath) rackUp(i int) {
	for i > 0 {
		up := (i - 1) / 2
		if !p.rack[i].key.Before(p.rack[up].key) {
			return
		}
		p.rackSwap(i, up)
		i = up
	}
}

func (p *ccPath) rackDown(i0 int) bool {
	i, n := i0, len(p.rack)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && p.rack[r].key.Before(p.rack[l].key) {
			j = r
		}
		if !p.rack[j].key.Before(p.rack[i].key) {
			break
		}
		p.rackSwap(i, j)
		i = j
	}
	return i > i0
}
