package httpcarrier

import "github.com/postsockets/postsockets/carrier"

// IdleForks returns the forks t keeps idle, for tests that count their
// packets.
func IdleForks(t *Transport) []*carrier.Carrier {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*carrier.Carrier
	for _, rc := range t.conns {
		out = append(out, rc.forks...)
	}
	return out
}
