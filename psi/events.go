package psi

import (
	"time"

	"github.com/postsockets/postsockets/post"
)

// EventKind is the kind of a connection-level Event a stack reports.
type EventKind uint8

// Connection-level event kinds (RFC 9622 §8.3 names where one exists).
const (
	// EventPathChange: the path in use changed from Old to New
	// (migration, the peer moved, a fall back to an older path).
	EventPathChange EventKind = iota + 1
	// EventPathValidated: New passed path validation and may carry data
	// (multihoming: a new path became usable). Not an RFC 9622 event.
	EventPathValidated
	// EventSoftError: something went wrong that the transient survives
	// (an ICMP error, a silent path probed); Err says what.
	EventSoftError
)

func (k EventKind) String() string {
	switch k {
	case EventPathChange:
		return "PathChange"
	case EventPathValidated:
		return "PathValidated"
	case EventSoftError:
		return "SoftError"
	}
	return "unknown"
}

// Event is a connection-level event of one transient.
type Event struct {
	Kind     EventKind
	Old, New post.Path
	Err      error
	Time     time.Time
}

// EventSource is implemented by transients that report connection-level
// events: FSP always; QUIC (from quic-go's qlog hooks) and TCP (TCP_INFO)
// when Config.Events is set. docs/design.md lists which stack reports
// what. SetEventHandler replaces the handler; nil removes it. The
// stack may call h with its locks held: h must not block nor call back
// into the transient.
type EventSource interface {
	SetEventHandler(h func(Event))
}

// TransientStats are a transient's protocol counters; a field a stack
// cannot tell stays zero.
type TransientStats struct {
	PacketsSent, PacketsReceived, PacketsLost uint64
	Retransmissions                           uint64
	BytesSent, BytesReceived                  uint64 // on the wire, retransmissions included
	SmoothedRTT, RTTVar, MinRTT               time.Duration
	CongestionWindow                          int
}

// StatsReporter is implemented by transients that report protocol
// counters: FSP (its Conn.Stats), QUIC (quic-go's ConnectionStats) and TCP
// on Linux (TCP_INFO).
type StatsReporter interface {
	TransientStats() TransientStats
}
