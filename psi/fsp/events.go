package fsp

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// eventHook holds a connection's psi.EventSource handler.
type eventHook struct {
	h      atomic.Pointer[func(psi.Event)]
	lossAt time.Time // the last retransmission timeout reported; under Conn.mu
}

var (
	errSilentPath            = errors.New("fsp: a path fell silent after probing")
	errRetransmissionTimeout = errors.New("fsp: retransmission timeout")
)

// SetEventHandler (psi.EventSource) reports path changes, validations
// and silent paths of the connection. h is called with the connection's
// lock held: it must not block nor call into the connection.
func (c *Conn) SetEventHandler(h func(psi.Event)) {
	if h == nil {
		c.events.h.Store(nil)
		return
	}
	c.events.h.Store(&h)
}

// emit reports an event about paths old and new (either may be nil).
// Called with c.mu held.
func (c *Conn) emit(k psi.EventKind, old, new *path, err error) {
	h := c.events.h.Load()
	if h == nil {
		return
	}
	local := addrPort(c.LocalAddr())
	ev := psi.Event{Kind: k, Err: err, Time: time.Now()}
	if old != nil {
		ev.Old = post.Path{Local: local, Remote: addrPort(old.addr.netAddr()), RTT: old.rtt.SmoothedRTT(), Active: old == c.active}
	}
	if new != nil {
		ev.New = post.Path{Local: local, Remote: addrPort(new.addr.netAddr()), RTT: new.rtt.SmoothedRTT(), Active: true}
	}
	(*h)(ev)
}

func (t *transient) SetEventHandler(h func(psi.Event)) { t.c.SetEventHandler(h) }

// TransientStats (psi.StatsReporter) reports the connection's counters.
func (t *transient) TransientStats() psi.TransientStats {
	s := t.c.Stats()
	return psi.TransientStats{
		PacketsSent: s.PacketsSent, PacketsReceived: s.PacketsReceived,
		Retransmissions: s.Retransmissions, PacketsLost: s.PacketsLost,
		SmoothedRTT: s.SmoothedRTT, RTTVar: s.RTTVar, CongestionWindow: s.CongestionWindow,
	}
}
