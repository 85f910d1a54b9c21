package quic

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	quicqlog "github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// TransientStats (psi.StatsReporter) reports quic-go's ConnectionStats
// of the connection the transient's stream belongs to. quic-go counts
// lost packets but not the retransmissions it made of their frames, so
// Retransmissions stays zero.
func (t *Transient) TransientStats() psi.TransientStats {
	s := t.c.qc.ConnectionStats()
	return psi.TransientStats{
		PacketsSent: s.PacketsSent, PacketsReceived: s.PacketsReceived, PacketsLost: s.PacketsLost,
		BytesSent: s.BytesSent, BytesReceived: s.BytesReceived,
		SmoothedRTT: s.SmoothedRTT, RTTVar: s.MeanDeviation, MinRTT: s.MinRTT,
		CongestionWindow: int(s.CongestionWindow),
	}
}

// connHooks is what a connection learns from quic-go's qlog hooks, the
// only per-connection events quic-go (v0.65) exposes: its trace file, if
// tracing is on, and the events worth reporting (psi.EventSource), if
// Config.Events is set. It travels to quic-go's Tracer in the dial's
// context, or the server connection's (ConnContext), and to our conn in
// qc.Context().
type connHooks struct {
	file *bufferedFile // nil without a trace
	gate paramsGate    // for a 0-RTT dial's root stream (early.go)

	mu       sync.Mutex
	h        func(psi.Event)
	path     post.Path // the active path, as quic-go last reported it
	ptoAlarm bool      // a SoftError reported the current run of probe timeouts
}

type hooksKey struct{}

func withHooks(ctx context.Context) context.Context {
	return context.WithValue(ctx, hooksKey{}, &connHooks{})
}

func hooksOf(ctx context.Context) *connHooks {
	h, _ := ctx.Value(hooksKey{}).(*connHooks)
	return h
}

// ptoSoftError is how many probe timeouts in a row make a SoftError: the
// peer has not acknowledged anything for several round trips.
const ptoSoftError = 2

// observe turns the quic-go events that matter to an application into
// psi events: the active path changing (the server following a client
// that migrated, or the client switching paths) and runs of probe
// timeouts. Called from quic-go's goroutines; it must not block.
func (ch *connHooks) observe(ev qlogwriter.Event) {
	var out psi.Event
	ch.mu.Lock()
	switch e := ev.(type) {
	case quicqlog.StartedConnection:
		ch.path = post.Path{Local: endpoint(e.Local), Remote: endpoint(e.Remote), Active: true}
	case quicqlog.TupleAssigned:
		if e.TupleID != "" {
			break // a path being probed, not (yet) the one in use
		}
		p := post.Path{Local: endpoint(e.Local), Remote: endpoint(e.Remote), Active: true}
		if p.Local.Port() == 0 {
			p.Local = ch.path.Local
		}
		if p.Remote != ch.path.Remote || p.Local != ch.path.Local {
			out = psi.Event{Kind: psi.EventPathChange, Old: ch.path, New: p}
			out.Old.Active = false
			ch.path = p
		}
	case quicqlog.PTOCountUpdated:
		switch {
		case e.PTOCount == 0:
			ch.ptoAlarm = false
		case e.PTOCount >= ptoSoftError && !ch.ptoAlarm:
			ch.ptoAlarm = true
			out = psi.Event{Kind: psi.EventSoftError, Old: ch.path,
				Err: fmt.Errorf("quic: %d probe timeouts in a row: %w", e.PTOCount, post.ErrTimeout)}
		}
	}
	h := ch.h
	ch.mu.Unlock()
	if out.Kind != 0 && h != nil {
		out.Time = time.Now()
		h(out)
	}
}

func endpoint(e quicqlog.TupleEndpointInfo) netip.AddrPort {
	if e.IPv4.IsValid() {
		return e.IPv4
	}
	return e.IPv6
}

// SetEventHandler (psi.EventSource) reports path changes (quic-go's
// migration: the server follows a client whose address changed) and
// SoftErrors (repeated probe timeouts) of the transient's connection.
// Only connections dialled or accepted with Config.Events report them,
// and on the listening side only over a quic-go Transport the stack set
// up (its ConnContext carries the hooks); quic-go tells nothing
// otherwise.
func (t *Transient) SetEventHandler(h func(psi.Event)) {
	ch := t.c.hooks
	if ch == nil {
		return
	}
	ch.mu.Lock()
	ch.h = h
	ch.mu.Unlock()
}

var _ psi.EventSource = (*Transient)(nil)
