package tcp

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/internal/hsrate"
)

// slots admits server handshakes: at most max at once, perAddr from one
// address and perPrefix from one /24 (IPv4) or /48 (IPv6). When every slot
// is taken, a newcomer evicts a stalled handshake, one whose client has
// sent nothing, the longest stalled first; failing that, one from a
// busier prefix that has made no progress for a while (see victimLocked).
// So idle sockets, however many their sources, never lock out a client
// that talks, and a handshake making progress is never evicted for them.
type slots struct {
	max, perAddr, perPrefix int

	mu    sync.Mutex
	seq   uint64
	total int
	addrs map[netip.Addr]int
	pfxs  map[netip.Prefix][]*slot // oldest first
}

// slot is one admitted handshake.
type slot struct {
	addr  netip.Addr
	pfx   netip.Prefix
	evict func() // aborts the handshake
	seq   uint64 // admission order
	done  bool
	// since is when the handshake last made progress (UnixNano): its
	// admission, then the last read that returned bytes.
	since atomic.Int64
	heard atomic.Bool // the client has sent something
	// input reports bytes the kernel holds unread; nil means none known.
	input func() bool
}

// progress records that the client sent bytes.
func (sl *slot) progress() {
	sl.since.Store(time.Now().UnixNano())
	sl.heard.Store(true)
}

// protectFor is how long a handshake that has made progress is safe from
// eviction after it: longer than a round trip of any path a handshake can
// finish over within its timeout.
const protectFor = time.Second

func newSlots(max, perAddr, perPrefix int) *slots {
	return &slots{max: max, perAddr: perAddr, perPrefix: perPrefix,
		addrs: make(map[netip.Addr]int), pfxs: make(map[netip.Prefix][]*slot)}
}

// acquire admits a handshake from addr, or returns nil if its source is
// over quota or every slot is held by a handshake it may not evict. evict
// is called, without the lock held, if a later newcomer takes the slot;
// input, if not nil, reports whether the client's bytes wait unread.
func (s *slots) acquire(addr netip.Addr, evict func(), input func() bool) *slot {
	addr = hsrate.Host(addr)
	pfx := hsrate.Prefix(addr)
	var victim *slot
	s.mu.Lock()
	if s.addrs[addr] >= s.perAddr || len(s.pfxs[pfx]) >= s.perPrefix {
		s.mu.Unlock()
		return nil
	}
	if s.total >= s.max {
		victim = s.victimLocked(pfx)
		if victim == nil {
			s.mu.Unlock()
			return nil
		}
		s.removeLocked(victim)
	}
	s.seq++
	sl := &slot{addr: addr, pfx: pfx, evict: evict, seq: s.seq, input: input}
	sl.since.Store(time.Now().UnixNano())
	s.total++
	s.addrs[addr]++
	s.pfxs[pfx] = append(s.pfxs[pfx], sl)
	s.mu.Unlock()
	if victim != nil {
		victim.evict()
	}
	return sl
}

// victimLocked picks the handshake a newcomer from pfx may evict, or nil.
// First the longest-stalled handshake whose client has sent nothing (its
// bytes may not have been read yet: input is asked). Otherwise, among
// those without progress for protectFor, the longest without from the
// busiest prefix, provided it holds more than the newcomer's, so a client
// from a quiet prefix is evicted only by one from a prefix quieter still.
func (s *slots) victimLocked(pfx netip.Prefix) *slot {
	for range 4 {
		var stalled *slot
		for _, l := range s.pfxs {
			for _, sl := range l {
				if !sl.heard.Load() && (stalled == nil || sl.seq < stalled.seq) {
					stalled = sl
				}
			}
		}
		if stalled == nil {
			break
		}
		if stalled.input == nil || !stalled.input() {
			return stalled
		}
		stalled.progress() // its bytes wait for its goroutine
	}
	cutoff := time.Now().Add(-protectFor).UnixNano()
	var victim *slot
	var most int
	for p, l := range s.pfxs {
		if len(l) <= len(s.pfxs[pfx]) || len(l) < most || p == pfx {
			continue
		}
		for _, sl := range l {
			since := sl.since.Load()
			if since > cutoff {
				continue
			}
			if victim == nil || len(l) > most || since < victim.since.Load() {
				victim, most = sl, len(l)
			}
		}
	}
	return victim
}

// release frees sl; releasing an evicted slot does nothing.
func (s *slots) release(sl *slot) {
	s.mu.Lock()
	if !sl.done {
		s.removeLocked(sl)
	}
	s.mu.Unlock()
}

func (s *slots) removeLocked(sl *slot) {
	sl.done = true
	s.total--
	if s.addrs[sl.addr]--; s.addrs[sl.addr] == 0 {
		delete(s.addrs, sl.addr)
	}
	l := s.pfxs[sl.pfx]
	for i, x := range l {
		if x == sl {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(s.pfxs, sl.pfx)
	} else {
		s.pfxs[sl.pfx] = l
	}
}

// inUse returns the number of handshakes admitted.
func (s *slots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// queueShare counts the roots in the accept queue, or promised a place in
// it, in total and per source address: one address may hold a quarter of
// the queue, so clients that complete handshakes and wait never fill it.
type queueShare struct {
	mu      sync.Mutex
	max     int
	perAddr int
	total   int
	addrs   map[netip.Addr]int
}

func newQueueShare(n int) *queueShare {
	return &queueShare{max: n, perAddr: max(1, n/4), addrs: make(map[netip.Addr]int)}
}

// reserve promises addr a place, or returns false.
func (q *queueShare) reserve(addr netip.Addr) bool {
	addr = hsrate.Host(addr)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.total >= q.max || q.addrs[addr] >= q.perAddr {
		return false
	}
	q.total++
	q.addrs[addr]++
	return true
}

// release gives addr's place back.
func (q *queueShare) release(addr netip.Addr) {
	addr = hsrate.Host(addr)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.total--
	if q.addrs[addr]--; q.addrs[addr] <= 0 {
		delete(q.addrs, addr)
	}
}
