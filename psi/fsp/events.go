package fsp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
	"github.com/postsockets/postsockets/psi/fsp/internal/congestion"
)

// eventHook holds a connection's psi.EventSource handler.
type eventHook struct {
	h      atomic.Pointer[func(psi.Event)]
	lossAt time.Time // the last retransmission timeout reported; under Conn.mu
	icmpAt time.Time // the last ICMP error reported; under Conn.mu
	// local is the local address the peer's newest packets came to, on
	// a socket that knows (sockio.Packet.Dst); under Conn.mu.
	local netip.Addr
}

var (
	errICMP                  = errors.New("fsp: ICMP error from the path")
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
	local := c.localLocked()
	ev := psi.Event{Kind: k, Err: err, Time: time.Now()}
	if old != nil {
		ev.Old = post.Path{Local: local, Remote: addrPort(old.addr.netAddr()), RTT: measured(&old.rtt), Active: old == c.active}
	}
	if new != nil {
		ev.New = post.Path{Local: local, Remote: addrPort(new.addr.netAddr()), RTT: measured(&new.rtt), Active: true}
	}
	(*h)(ev)
}

// localLocked returns the connection's local address: the socket's,
// with the address the peer's packets come to in place of an unspecified
// one. Called with c.mu held.
func (c *Conn) localLocked() netip.AddrPort {
	ap := addrPort(c.LocalAddr())
	if a := c.events.local; a.IsValid() && (!ap.IsValid() || ap.Addr().IsUnspecified()) {
		return netip.AddrPortFrom(a, ap.Port())
	}
	return ap
}

// localAddrPort is localLocked for callers without c.mu.
func (c *Conn) localAddrPort() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.localLocked()
}

// noteLocal records the local address dst the peer's newest packet came
// to. When it changes, this end moved (its old address went away, or a
// route changed): the path is now another one, though the peer's address
// is the same. Called with c.mu held.
func (c *Conn) noteLocal(dst netip.Addr) {
	if !dst.IsValid() || dst == c.events.local {
		return
	}
	old := c.localLocked()
	first := !c.events.local.IsValid()
	c.events.local = dst
	if first || c.active == nil {
		return
	}
	c.log.Debug("fsp: local address changed", "from", old, "to", dst)
	if c.qlog != nil {
		c.qlog.localMoved(old, c.localLocked())
	}
	h := c.events.h.Load()
	if h == nil {
		return
	}
	a := c.active
	remote := addrPort(a.addr.netAddr())
	(*h)(psi.Event{
		Kind: psi.EventPathChange, Time: time.Now(),
		Old: post.Path{Local: old, Remote: remote, RTT: measured(&a.rtt)},
		New: post.Path{Local: c.localLocked(), Remote: remote, RTT: measured(&a.rtt), Active: true},
	})
}

// icmpSoftError reports an ICMP error for a packet sent to the peer
// (port or host unreachable) as a SoftError, at most once per
// retransmission timeout (without backoff: retransmissions backing off
// provoke one each), and the connection goes on. A port unreachable also
// counts toward the end of the connection (icmpRefused). Called with
// c.mu held.
func (c *Conn) icmpSoftError(errno syscall.Errno) {
	now := time.Now()
	if now.Sub(c.events.icmpAt) < max(c.lossRTT().RTO(), minProbeInterval) {
		return
	}
	c.events.icmpAt = now
	c.log.Debug("fsp: ICMP error", "remote", c.remote, "err", errno)
	c.emit(psi.EventSoftError, c.active, nil, fmt.Errorf("%w: %w", errICMP, errno))
	if errno == syscall.ECONNREFUSED {
		c.icmpRefused(now)
	}
}

// maxRefusals is how many port unreachables, reported at least a
// retransmission timeout and minProbeInterval apart (icmpSoftError) with no authenticated
// packet from the peer since the first, end a connection.
const maxRefusals = 3

// icmpRefused counts a port unreachable for the active path. An ICMP
// error is not authenticated, so one alone ends nothing: the first
// probes the peer, and any authenticated packet from it starts the count
// over. A peer whose process is gone from a live host (a crash) never
// answers, and its host refuses each packet sent to it, so the connection
// fails with post.ErrReset after a few retransmissions instead of its
// idle timeout; forged errors cannot end a connection whose peer
// answers. Called with c.mu held.
func (c *Conn) icmpRefused(now time.Time) {
	p := c.active
	if p == nil {
		return
	}
	if p.refused.IsZero() || !c.lastRecv.Before(p.refused) {
		p.refused, p.refusals = now, 0
	}
	p.refusals++
	if p.refusals >= maxRefusals {
		c.failLocked(post.Errorf(post.ErrReset, "fsp: peer's port unreachable, %d times over %v with no word from it",
			p.refusals, now.Sub(p.refused).Round(time.Millisecond)))
		return
	}
	c.probe(p, now)
}

func (t *transient) SetEventHandler(h func(psi.Event)) { t.c.SetEventHandler(h) }

// TransientStats (psi.StatsReporter) reports the connection's counters.
func (t *transient) TransientStats() psi.TransientStats {
	s := t.c.Stats()
	return psi.TransientStats{
		PacketsSent: s.PacketsSent, PacketsReceived: s.PacketsReceived,
		Retransmissions: s.Retransmissions, PacketsLost: s.PacketsLost,
		BytesSent: s.BytesSent, BytesReceived: s.BytesReceived,
		SmoothedRTT: s.SmoothedRTT, RTTVar: s.RTTVar, MinRTT: s.MinRTT,
		CongestionWindow: s.CongestionWindow,
	}
}

// ReadBacklog (psi.BacklogReporter) reports what the connection holds
// unread (Conn.ReadBacklog).
func (t *transient) ReadBacklog() (ready, held bool) { return t.c.ReadBacklog() }

// measured is r's smoothed RTT, or zero before its first sample (or
// the estimate a ticket carried).
func measured(r *congestion.RTTStats) time.Duration {
	if d, ok := r.Estimate(); ok {
		return d
	}
	return 0
}
