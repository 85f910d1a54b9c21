package post

import (
	"net/netip"
	"time"
)

// MessageID identifies a Message within one Carrier. IDs are assigned by the
// Carrier on send when left zero, and are used to name antecedents. An ID
// set by the caller names one message at a time: SendMsg refuses it while
// another message with it is queued or being sent.
type MessageID uint64

// Properties describe how a Message should be sent. The zero value is a
// reliable, ordered message of highest priority with no deadline.
type Properties struct {
	// Lifetime is how long after the send call the Message remains useful.
	// A Message not sent before its lifetime passes is dropped and reported
	// with EventExpired; one whose write it cuts short is abandoned (on
	// QUIC and TCP, with its transient, when flow control held the write;
	// see docs/design.md). Zero means no lifetime: sent reliably. A
	// negative Lifetime is refused with an error wrapping ErrInvalid.
	Lifetime time.Duration
	// Niceness orders messages on one Carrier: 0 is the highest priority,
	// and class N+1 yields to class N.
	Niceness uint
	// Antecedents are messages that must be sent before this one.
	Antecedents []MessageID
	// Idempotent messages may be replayed by the network without harm and
	// so may travel as 0-RTT data.
	Idempotent bool
	// Immediate asks the stack to send the message in one packet, without
	// waiting to coalesce it with others.
	Immediate bool
	// Unreliable permits the stack to drop the message rather than
	// retransmit it (datagrams, milk-like clones). It only takes effect
	// together with a Lifetime and where the policy allows (the
	// datagrams feature not prohibited). A message sent as a datagram
	// may also arrive before or after the Carrier's other messages.
	Unreliable bool
}

// Message is the unit of communication between applications.
type Message struct {
	ID      MessageID
	Content []byte
	Properties
	// OnEvent, if set, is called for each send event of this message. It
	// must not block.
	OnEvent func(SendEvent)

	// Partial is set on a received message that carries only part of the
	// content; the final part has End set.
	Partial bool
	// End marks the final part of a received message. A complete message
	// always has End set.
	End bool
	// Offset is the position of this part's first byte in the whole message.
	Offset int64

	// Received messages only: From is the sender's address, Peer its
	// verified identity ("pin:<hex>" or "psk:<hex>", the pin of its key)
	// when the handshake proved one, Fork the number of the forked
	// Carrier it came on (0: the root), and Early reports that it is the
	// first message of a connection that accepted 0-RTT data, so it may
	// have come as 0-RTT data (and so be a replay).
	From  netip.AddrPort
	Peer  string
	Fork  uint64
	Early bool
}

// Deadline returns the wall-clock time by which the message must have been
// sent, measured from start, and whether it has one.
func (p *Properties) Deadline(start time.Time) (time.Time, bool) {
	if p.Lifetime <= 0 {
		return time.Time{}, false
	}
	return start.Add(p.Lifetime), true
}

// EventKind is the kind of a SendEvent.
type EventKind uint8

// Send event kinds.
const (
	// EventSent: the message was handed to the protocol stack in full.
	EventSent EventKind = iota + 1
	// EventAcked: the peer acknowledged all of the message.
	EventAcked
	// EventExpired: the lifetime passed before the message was sent.
	EventExpired
	// EventError: the message could not be sent; Err says why.
	EventError
)

func (k EventKind) String() string {
	switch k {
	case EventSent:
		return "sent"
	case EventAcked:
		return "acknowledged"
	case EventExpired:
		return "expired"
	case EventError:
		return "error"
	}
	return "unknown"
}

// SendEvent reports progress of one sent Message.
type SendEvent struct {
	Kind EventKind
	ID   MessageID
	Time time.Time
	Err  error
}
