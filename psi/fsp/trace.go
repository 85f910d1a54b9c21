package fsp

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/postsockets/postsockets/internal/qlog"
	"github.com/postsockets/postsockets/psi/fsp/internal/reliability"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// TraceSchema names FSP's qlog event schema, listed in every FSP trace's
// header; docs/tracing.md describes its events.
const TraceSchema = "urn:postsockets:qlog:events:fsp-1"

// tracer writes a connection's qlog trace (docs/tracing.md). A Conn's
// qlog field is nil when tracing is off, and every hook checks it first.
// Its methods are called with c.mu held.
type tracer struct {
	w        *qlog.Writer
	retx     bool // the packet being sealed is a retransmission
	last     metricsEvent
	recovery bool
}

// traceStart opens the trace once the connection is established (so
// only a peer that proved itself costs a file). Called with c.mu held.
func (c *Conn) traceStart(now time.Time) {
	dir := qlog.Dir(c.cfg.TraceDir)
	if dir == "" || c.qlog != nil {
		return
	}
	role := "server"
	if c.initiator {
		role = "client"
	}
	w, err := qlog.Create(dir, "fsp", role, fmt.Sprintf("%08x", c.local), TraceSchema, now)
	if err != nil {
		c.log.Warn("fsp: no trace", "err", err)
		return
	}
	c.qlog = &tracer{w: w}
	w.Event(now, "fsp:connection_started", startedEvent{
		Local: c.local, Peer: c.peer, Remote: c.remote.String(),
		Clone: c.parent != nil, Resumed: c.resumed,
	})
}

// traceClose ends the trace. Called with c.mu held.
func (c *Conn) traceClose(err error) {
	ev := closedEvent{}
	if err != nil {
		ev.Error = err.Error()
	}
	c.qlog.w.Event(time.Now(), "fsp:connection_closed", ev)
	if err := c.qlog.w.Close(); err != nil {
		c.log.Warn("fsp: trace not written", "err", err)
	}
}

type startedEvent struct {
	Local   uint32 `json:"local_alfid"`
	Peer    uint32 `json:"peer_alfid"`
	Remote  string `json:"remote"`
	Clone   bool   `json:"clone,omitempty"`
	Resumed bool   `json:"resumed,omitempty"`
}

type closedEvent struct {
	Error string `json:"error,omitempty"`
}

// packetEvent describes a protected packet sent or received.
type packetEvent struct {
	PN             uint64 `json:"packet_number"`
	Type           string `json:"packet_type"`
	Seq            uint32 `json:"seq"`      // the header's sequence number
	Expected       uint32 `json:"expected"` // the cumulative acknowledgement it carries
	Window         uint32 `json:"window"`
	Length         int    `json:"length"` // payload bytes
	Retransmission bool   `json:"retransmission,omitempty"`
	EOT            bool   `json:"end_of_message,omitempty"`
	AckGaps        *int   `json:"ack_gaps,omitempty"` // set when it carries a SELECTIVE_NACK
	Challenge      bool   `json:"path_challenge,omitempty"`
	Response       bool   `json:"path_response,omitempty"`
	KeyPhase       bool   `json:"key_phase,omitempty"`
}

func newPacketEvent(pn uint64, p *wire.Packet, n int) packetEvent {
	ev := packetEvent{
		PN: pn, Type: p.Opcode.String(), Seq: p.Seq, Expected: p.Expected, Window: p.Window, Length: n,
		EOT:       p.Flags&wire.FlagEOT != 0,
		Challenge: p.HasChallenge, Response: p.HasResponse,
		KeyPhase: p.Flags&wire.FlagKeyPhase != 0,
	}
	if p.HasSNACK {
		g := len(p.SNACK.Gaps)
		ev.AckGaps = &g
	}
	return ev
}

// sent records a protected packet sealed for sending.
func (t *tracer) sent(pn uint64, p *wire.Packet, n int) {
	ev := newPacketEvent(pn, p, n)
	ev.Retransmission, t.retx = t.retx, false
	t.w.Event(time.Now(), "fsp:packet_sent", ev)
}

// received records an authenticated packet.
func (t *tracer) received(now time.Time, pn uint64, p *wire.Packet, n int) {
	t.w.Event(now, "fsp:packet_received", newPacketEvent(pn, p, n))
}

type ackedEvent struct {
	Count    int    `json:"count"`
	Bytes    int    `json:"bytes"`
	Expected uint64 `json:"expected"` // everything below it is acknowledged
}

// acked records the packets an acknowledgement newly covered.
func (t *tracer) acked(now time.Time, res *reliability.AckResult[txData], expected uint64) {
	if len(res.Acked) > 0 {
		t.w.Event(now, "fsp:packets_acked", ackedEvent{Count: len(res.Acked), Bytes: res.AckedBytes, Expected: expected})
	}
}

type lostEvent struct {
	PN    uint64 `json:"packet_number"`
	Seq   uint64 `json:"seq"`
	Bytes int    `json:"bytes"`
}

// lost records a packet declared lost.
func (t *tracer) lost(now time.Time, e *reliability.Entry[txData]) {
	t.w.Event(now, "fsp:packet_lost", lostEvent{PN: e.Value.pn, Seq: e.Seq, Bytes: e.Bytes})
}

type timeoutEvent struct {
	Lost    int  `json:"lost"` // packets in flight presumed lost
	Backoff uint `json:"backoff"`
}

// timeout records a retransmission timeout.
func (t *tracer) timeout(now time.Time, lost int, backoff uint) {
	t.w.Event(now, "fsp:retransmission_timeout", timeoutEvent{Lost: lost, Backoff: backoff})
}

type metricsEvent struct {
	MinRTT      float64 `json:"min_rtt"` // milliseconds
	SmoothedRTT float64 `json:"smoothed_rtt"`
	LatestRTT   float64 `json:"latest_rtt"`
	RTTVariance float64 `json:"rtt_variance"`
	CWND        int     `json:"congestion_window"` // bytes
	InFlight    int     `json:"bytes_in_flight"`
	PacingRate  float64 `json:"pacing_rate"` // bytes per second; 0 without pacing
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// metrics records the RTT estimates, congestion window and pacing rate
// when any of them changed, and a change of congestion state.
func (c *Conn) traceMetrics(now time.Time) {
	t := c.qlog
	cwnd, recovery, rate := c.ccState()
	m := metricsEvent{
		MinRTT: ms(c.rtt.MinRTT()), SmoothedRTT: ms(c.rtt.SmoothedRTT()),
		LatestRTT: ms(c.rtt.LatestRTT()), RTTVariance: ms(c.rtt.RTTVar()),
		CWND: cwnd, InFlight: c.snd.BytesInFlight(), PacingRate: rate,
	}
	cmp := m
	cmp.InFlight = t.last.InFlight
	if cmp != t.last {
		t.w.Event(now, "fsp:metrics_updated", m)
	}
	t.last = m
	if r := recovery; r != t.recovery {
		t.recovery = r
		st := stateEvent{Old: "recovery", New: "normal"}
		if r {
			st.Old, st.New = st.New, st.Old
		}
		t.w.Event(now, "fsp:congestion_state_updated", st)
	}
}

type stateEvent struct {
	Old string `json:"old"`
	New string `json:"new"`
}

type pathEvent struct {
	Address string  `json:"address"`
	From    string  `json:"from,omitempty"`
	RTT     float64 `json:"rtt,omitempty"`   // milliseconds: the challenge's round trip
	Local   bool    `json:"local,omitempty"` // this end's address changed, not the peer's
}

// path records a path event: fsp:path_validated or fsp:path_migrated.
func (t *tracer) path(name string, from, to *path, rtt time.Duration) {
	ev := pathEvent{Address: to.addr.String(), RTT: ms(rtt)}
	if from != nil {
		ev.From = from.addr.String()
	}
	t.w.Event(time.Now(), name, ev)
}

// localMoved records fsp:path_migrated for a change of this end's
// address: the peer's packets come to local address to, not from.
func (t *tracer) localMoved(from, to netip.AddrPort) {
	t.w.Event(time.Now(), "fsp:path_migrated", pathEvent{Address: to.String(), From: from.String(), Local: true})
}

type mtuEvent struct {
	Old     int    `json:"old"`
	New     int    `json:"new"`
	Trigger string `json:"trigger"` // probe, black_hole or path
}

// mtuUpdated records a change of the path MTU data is packetized at.
func (t *tracer) mtuUpdated(old, new int, trigger string) {
	t.w.Event(time.Now(), "fsp:mtu_updated", mtuEvent{Old: old, New: new, Trigger: trigger})
}

type keyEvent struct {
	Generation uint32 `json:"generation"`
	Trigger    string `json:"trigger"`
}

// keyUpdated records a key update.
func (t *tracer) keyUpdated(gen uint32) {
	t.w.Event(time.Now(), "fsp:key_updated", keyEvent{Generation: gen, Trigger: "local"})
}
