package quic

import (
	"net/netip"
	"sync"
)

// sourceConns bounds the live connections each source (an IPv4 address
// or an IPv6 /64, hsrate.Host) holds on a listener, from admission until
// the connection ends, as the FSP listener's memory budget bounds a
// peer's share.
type sourceConns struct {
	max int
	mu  sync.Mutex
	n   map[netip.Addr]int // entries removed at zero
}

func newSourceConns(max int) *sourceConns {
	return &sourceConns{max: max, n: make(map[netip.Addr]int)}
}

// take counts one more connection of src, or reports false if src holds
// max already.
func (s *sourceConns) take(src netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[src] >= s.max {
		return false
	}
	s.n[src]++
	return true
}

// give forgets one connection of src.
func (s *sourceConns) give(src netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[src]--; s.n[src] <= 0 {
		delete(s.n, src)
	}
}

// of returns the connections src holds.
func (s *sourceConns) of(src netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[src]
}
