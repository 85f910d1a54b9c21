package carrier

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/association"
	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Stats are a Carrier's counters. Messages and bytes count application
// messages and content; the protocol counters come from the stack
// (psi.StatsReporter) and stay zero where it cannot tell.
type Stats struct {
	Stack string
	Path  post.Path
	// Race is the Association's last race: the winning stack and path
	// and how many attempts it started.
	Race             association.Winner
	MessagesSent     uint64
	MessagesReceived uint64
	BytesSent        uint64
	BytesReceived    uint64
	// Forks counts Carriers forked from or accepted on this one.
	Forks uint64
	// Fork is this Carrier's number among its root's forks (0: the root).
	Fork uint64
	// EventsDropped counts events Config.OnEvent was too slow for.
	EventsDropped uint64
	psi.TransientStats
}

// counters are the Carrier's own atomic counters.
type counters struct {
	msgsOut, msgsIn, bytesOut, bytesIn, forks atomic.Uint64
}

// keepStats remembers t's stack, path and counters for Stats once t is
// gone.
func (c *Carrier) keepStats(t psi.Transient) {
	if t == nil {
		return
	}
	s := &Stats{Stack: t.Stack(), Path: t.Path()}
	if r, ok := t.(psi.StatsReporter); ok {
		s.TransientStats = r.TransientStats()
	}
	c.lastStats.Store(s)
}

// family numbers the forks of one root Carrier.
type family struct{ next atomic.Uint64 }

// Stats returns the Carrier's counters.
func (c *Carrier) Stats() Stats {
	s := Stats{
		MessagesSent: c.cnt.msgsOut.Load(), MessagesReceived: c.cnt.msgsIn.Load(),
		BytesSent: c.cnt.bytesOut.Load(), BytesReceived: c.cnt.bytesIn.Load(),
		Forks: c.cnt.forks.Load(), Fork: c.forkNo.Load(),
	}
	if c.ev != nil {
		s.EventsDropped = c.ev.dropped.Load()
	}
	s.Race, _ = c.assoc.Winner()
	if t := c.transient(); t != nil {
		s.Stack, s.Path = t.Stack(), t.Path()
		if r, ok := t.(psi.StatsReporter); ok {
			s.TransientStats = r.TransientStats()
		}
	} else if last := c.lastStats.Load(); last != nil {
		// Closed or dormant: what the last transient reported.
		s.Stack, s.Path, s.TransientStats = last.Stack, last.Path, last.TransientStats
	}
	return s
}

// noteSent counts a message handed to the stack in full.
func (c *Carrier) noteSent(size int64) {
	c.cnt.msgsOut.Add(1)
	c.cnt.bytesOut.Add(uint64(size))
}

// noteReceived counts a delivered part and stamps m with its sender, the
// fork it came on and whether it came as 0-RTT data.
func (c *Carrier) noteReceived(m *post.Message) {
	c.cnt.bytesIn.Add(uint64(len(m.Content)))
	if m.End {
		c.cnt.msgsIn.Add(1)
	}
	m.Fork = c.forkNo.Load()
	t := c.transient()
	if t == nil {
		return
	}
	si := c.senderOf(t)
	m.From, m.Peer = si.from, si.peer
	if z, ok := t.(psi.ZeroRTTReporter); ok && m.Offset == 0 && !c.firstDone.Swap(true) {
		m.Early = z.Used0RTT()
	} else {
		c.firstDone.Store(true)
	}
}

// senderInfo caches what received messages say of their sender, so
// that a stream of small messages does not ask the stack each time.
type senderInfo struct {
	t    psi.Transient
	at   time.Time
	from netip.AddrPort
	peer string
}

// senderRefresh bounds how stale a received message's From may be after
// the peer moved.
const senderRefresh = 50 * time.Millisecond

func (c *Carrier) senderOf(t psi.Transient) *senderInfo {
	si := c.sender.Load()
	if si != nil && si.t == t && time.Since(si.at) < senderRefresh {
		return si
	}
	c.pollPath(t)
	n := &senderInfo{t: t, at: time.Now(), from: t.Path().Remote}
	if si != nil && si.t == t && si.peer != "" {
		n.peer = si.peer // a verified identity does not change
	} else if id, ok := psi.PeerIdentityOf(t); ok && id.Chain != nil {
		n.peer = "pin:" + id.Pin.String()
		if id.PSK {
			n.peer = "psk:" + id.Pin.String()
		}
	}
	c.sender.Store(n)
	return n
}

// ListenerStats are a Listener's counters.
type ListenerStats struct {
	// Accepted counts Carriers accepted, by stack name.
	Accepted map[string]uint64
	// AcceptErrors counts failed accepts (handshakes refused or broken).
	AcceptErrors uint64
	// ReceiveHeld is the bytes of whole messages counted against
	// Config.ReceiveBudget now, ReceivePeak the most counted at once,
	// and ReceiveEvicted the Carriers ended because their half-gathered
	// message stalled while others waited for room.
	ReceiveHeld, ReceivePeak int64
	ReceiveEvicted           uint64
	Since                    time.Time
}

// Stats returns the Listener's counters.
func (l *Listener) Stats() ListenerStats {
	s := ListenerStats{Accepted: map[string]uint64{}, AcceptErrors: l.acceptErrs.Load(), Since: l.since}
	s.ReceiveHeld, s.ReceivePeak, s.ReceiveEvicted = l.budget.stats()
	for i, n := range l.names {
		if i < len(l.accepted) {
			s.Accepted[n] = l.accepted[i].Load()
		}
	}
	return s
}

// adopt numbers f, forked from or accepted on c, in c's family.
func (c *Carrier) adopt(f *Carrier) {
	c.cnt.forks.Add(1)
	f.fam = c.fam
	f.forkNo.Store(c.fam.next.Add(1))
}
