// Package wire encodes and decodes FSP packets: the fixed header, the
// optional extension headers chained behind it (CONNECT_PARAM,
// EPHEMERAL_KEY, SELECTIVE_NACK) and the payload boundary given by the
// header stack pointer. It does no cryptography and no I/O.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the FSP major version carried in the first octet.
const Version = 0

// Opcode is an FSP operation code.
type Opcode uint8

// Operation codes, numbered as in the reference implementation.
const (
	InitConnect    Opcode = iota + 1 // INIT_CONNECT
	AckInitConnect                   // ACK_INIT_CONNECT, carries the cookie
	ConnectRequest                   // CONNECT_REQUEST, echoes the cookie
	AckConnectReq                    // ACK_CONNECT_REQ
	Reset                            // RESET
	Persist                          // PERSIST: data with an acknowledgement
	PureData                         // PURE_DATA
	Adjourn                          // ADJOURN
	AckFlush                         // ACK_FLUSH
	Restore                          // RESTORE
	Release                          // RELEASE (FINISH)
	Multiply                         // MULTIPLY (clone)
	KeepAlive                        // KEEP_ALIVE
	// ClientAuth (CLIENT_AUTH) is ours: the initiator's certificate chain
	// and transcript signature, protected under the new session keys,
	// sent when ACK_CONNECT_REQ asks for a client certificate.
	ClientAuth
	// Ticket (NEW_TICKET) is ours: a resumption ticket the responder
	// sends, protected, once the connection is confirmed.
	Ticket
	maxOpcode = Ticket
)

var opNames = [...]string{"", "INIT_CONNECT", "ACK_INIT_CONNECT", "CONNECT_REQUEST",
	"ACK_CONNECT_REQ", "RESET", "PERSIST", "PURE_DATA", "ADJOURN", "ACK_FLUSH",
	"RESTORE", "RELEASE", "MULTIPLY", "KEEP_ALIVE", "CLIENT_AUTH", "NEW_TICKET"}

func (o Opcode) String() string {
	if o >= 1 && o <= maxOpcode {
		return opNames[o]
	}
	return fmt.Sprintf("OPCODE(%d)", uint8(o))
}

// Extension header types.
const (
	ExtConnectParam  = 0x11
	ExtEphemeralKey  = 0x12
	ExtSelectiveNACK = 0x13
	// ExtSkip marks a packet of a milk-class connection and carries the
	// sender's skip point: the lowest sequence number it still delivers.
	// The receiver gives up waiting for anything below it.
	ExtSkip = 0x14
	// ExtPathChallenge carries an 8-octet nonce the receiver must echo in
	// ExtPathResponse: it validates the address the challenge went to.
	ExtPathChallenge = 0x15
	ExtPathResponse  = 0x16
	// ExtForkCredit carries the fork credit: how many clones, counted
	// from the start of the connection, the sender lets its peer fork
	// from it (the low 32 bits of the count).
	ExtForkCredit = 0x17
	// ExtFragment marks a data packet carrying part of the payload of
	// its sequence number: the octet offset of the part and the
	// payload's total length (two octets each). A sender whose path MTU
	// fell below the size it packetized the data at resends it this way;
	// the receiver reassembles the payload before taking the sequence
	// number.
	ExtFragment = 0x18
)

// FragmentLen is the length of the FRAGMENT extension.
const FragmentLen = 8

// ForkCreditLen is the length of the FORK_CREDIT extension.
const ForkCreditLen = 8

// Header flags.
const (
	// FlagEOT marks the last packet of a transmit transaction (message).
	FlagEOT = 1 << 0
	// FlagAckRequest asks the receiver to acknowledge at once.
	FlagAckRequest = 1 << 1
	// FlagKeyPhase is reserved for key installation by the upper layer.
	FlagKeyPhase = 1 << 2
	// FlagAbort (ours) marks, with FlagEOT, a data packet without payload
	// that ends the transmit transaction as aborted: the receiver drops
	// what it holds unread of the message and reports it reset. Parse
	// rejects it without FlagEOT.
	FlagAbort = 1 << 3
	// FlagTicketAck (ours), on a protected packet of an initiator's root
	// connection, says that a NEW_TICKET arrived on the connection: the
	// listener stops resending it. (On RESTORE the same bit says that the
	// initiator may send 0-RTT data.)
	FlagTicketAck = 1 << 4
	// FlagTokenRequest (ours), on a protected packet, asks the peer for
	// the reset token of the connection: a sender that has none sets it
	// until one arrives. A peer that can send stateless resets answers
	// with FlagResetToken.
	FlagTokenRequest = 1 << 6
	// FlagResetToken (ours) marks a protected KEEP_ALIVE whose payload
	// starts with the sender's reset token for the connection
	// (ResetTokenLen octets, encrypted with the rest of the payload).
	FlagResetToken = 1 << 7
)

// ResetTokenLen is the length of a reset token.
const ResetTokenLen = 16

// StatelessResetTag is the length of the tag that ends an unauthenticated
// RESET: a truncated HMAC-SHA256 (the handshake tag).
const StatelessResetTag = 16

// StatelessResetLen is the length of a stateless reset: the fixed
// header, the reset token and the tag.
const StatelessResetLen = HeaderLen + ResetTokenLen + StatelessResetTag

// HeaderLen is the length of the fixed header.
const HeaderLen = 28

// MaxWindow is the largest receive window the 24-bit field carries.
const MaxWindow = 1<<24 - 1

// SkipLen is the length of the SKIP extension.
const SkipLen = 8

// MaxGaps bounds the gap descriptors in one SELECTIVE_NACK header.
const MaxGaps = 64

// Errors returned by Parse.
var (
	ErrShort     = errors.New("fsp/wire: packet too short")
	ErrVersion   = errors.New("fsp/wire: not an FSP version 0 packet")
	ErrMalformed = errors.New("fsp/wire: malformed header")
)

// Header is the fixed header. On the wire it is laid out as
//
//	0      version (0): the first octet always has bits 0x40 and 0x80 clear
//	1      opcode
//	2..3   header stack pointer: offset of the payload
//	4      flags
//	5..7   advertised receive window, in packets
//	8..11  sequence number (data packets) or next sequence number
//	12..15 expected sequence number (cumulative acknowledgement)
//	16..19 packet number, low 32 bits (nonce and replay protection)
//	20..23 destination ALFID
//	24..27 source ALFID
type Header struct {
	Opcode   Opcode
	Flags    uint8
	Window   uint32
	Seq      uint32
	Expected uint32
	PN       uint32
	Dst, Src uint32
}

// ConnectParam is the CONNECT_PARAM extension: connection parameters
// exchanged in CONNECT_REQUEST and ACK_CONNECT_REQ.
type ConnectParam struct {
	Window      uint32
	MaxMessage  uint32
	Association [16]byte
}

const connectParamLen = 4 + 4 + 4 + 16

// SNACK is the SELECTIVE_NACK extension: the latest sequence number
// received, the delay before this acknowledgement was sent, and gap
// descriptors starting at the header's expected sequence number: Gap
// packets missing, followed by Data packets received, repeatedly.
type SNACK struct {
	Latest   uint32
	AckDelay uint32 // microseconds
	Gaps     []Gap
}

// Gap is one SNACK gap descriptor.
type Gap struct {
	Gap, Data uint32
}

// Packet is a decoded packet. Slices alias the input buffer.
type Packet struct {
	Header
	HasParam bool
	Param    ConnectParam
	// EphemeralKey is the EPHEMERAL_KEY extension body, nil if absent.
	EphemeralKey []byte
	HasSNACK     bool
	SNACK        SNACK
	// HasSkip is set for the SKIP extension: Skip is the sender's lowest
	// live sequence number (milk-class connections only).
	HasSkip bool
	Skip    uint32
	// Path validation nonces (PATH_CHALLENGE, PATH_RESPONSE extensions).
	HasChallenge, HasResponse bool
	Challenge, Response       uint64
	// HasCredit is set for the FORK_CREDIT extension.
	HasCredit bool
	Credit    uint32
	// HasFragment is set for the FRAGMENT extension: the payload is the
	// part [FragOffset, FragOffset+len) of a payload of FragTotal octets.
	HasFragment bool
	FragOffset  uint16
	FragTotal   uint16
	// HeaderBytes is the fixed header plus extensions: the associated
	// data of the packet protection.
	HeaderBytes []byte
	// Payload follows the header stack pointer; when protected it
	// includes the tag.
	Payload []byte
}

// IsFSP reports whether b looks like an FSP datagram: first octet zero
// (version 0) and a known opcode. A socket shared with QUIC sends
// everything else to QUIC.
func IsFSP(b []byte) bool {
	return len(b) >= HeaderLen && b[0] == Version && b[1] >= 1 && Opcode(b[1]) <= maxOpcode
}

// StatelessResetToken returns the reset token a stateless reset carries:
// a RESET whose payload is a reset token and a tag. It reports false for
// any other packet.
func StatelessResetToken(p *Packet) ([]byte, bool) {
	if p.Opcode != Reset || len(p.Payload) != ResetTokenLen+StatelessResetTag {
		return nil, false
	}
	return p.Payload[:ResetTokenLen], true
}

// PeekDst returns the destination ALFID of an FSP datagram.
func PeekDst(b []byte) uint32 { return binary.BigEndian.Uint32(b[20:]) }

// Parse decodes b into p. The gap slice of p is reused. Parse never
// panics and never retains b beyond the slices in p.
func Parse(b []byte, p *Packet) error {
	if len(b) < HeaderLen {
		return ErrShort
	}
	if b[0] != Version {
		return ErrVersion
	}
	op := Opcode(b[1])
	if op < 1 || op > maxOpcode {
		return fmt.Errorf("%w: opcode %d", ErrMalformed, b[1])
	}
	hsp := int(binary.BigEndian.Uint16(b[2:]))
	if hsp < HeaderLen || hsp > len(b) {
		return fmt.Errorf("%w: header stack pointer %d", ErrMalformed, hsp)
	}
	gaps := p.SNACK.Gaps[:0]
	*p = Packet{}
	p.SNACK.Gaps = gaps
	p.Opcode = op
	p.Flags = b[4]
	if p.Flags&(FlagAbort|FlagEOT) == FlagAbort {
		return fmt.Errorf("%w: ABORT flag without EOT", ErrMalformed)
	}
	p.Window = uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])
	p.Seq = binary.BigEndian.Uint32(b[8:])
	p.Expected = binary.BigEndian.Uint32(b[12:])
	p.PN = binary.BigEndian.Uint32(b[16:])
	p.Dst = binary.BigEndian.Uint32(b[20:])
	p.Src = binary.BigEndian.Uint32(b[24:])
	if err := parseExtensions(b[HeaderLen:hsp], p); err != nil {
		return err
	}
	p.HeaderBytes = b[:hsp]
	p.Payload = b[hsp:]
	return nil
}

// ParseExtensions decodes a chain of extension headers into p.
func ParseExtensions(b []byte, p *Packet) error { return parseExtensions(b, p) }

func parseExtensions(b []byte, p *Packet) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("%w: truncated extension", ErrMalformed)
		}
		typ := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < 4 || n > len(b) {
			return fmt.Errorf("%w: extension length %d", ErrMalformed, n)
		}
		body := b[4:n]
		b = b[n:]
		switch typ {
		case ExtConnectParam:
			if p.HasParam || len(body) != connectParamLen-4 {
				return fmt.Errorf("%w: CONNECT_PARAM", ErrMalformed)
			}
			p.HasParam = true
			p.Param.Window = binary.BigEndian.Uint32(body)
			p.Param.MaxMessage = binary.BigEndian.Uint32(body[4:])
			copy(p.Param.Association[:], body[8:])
		case ExtEphemeralKey:
			if p.EphemeralKey != nil || len(body) == 0 {
				return fmt.Errorf("%w: EPHEMERAL_KEY", ErrMalformed)
			}
			p.EphemeralKey = body
		case ExtSelectiveNACK:
			if p.HasSNACK {
				return fmt.Errorf("%w: duplicate SELECTIVE_NACK", ErrMalformed)
			}
			if err := parseSNACK(body, &p.SNACK); err != nil {
				return err
			}
			p.HasSNACK = true
		case ExtSkip:
			if p.HasSkip || len(body) != 4 {
				return fmt.Errorf("%w: SKIP", ErrMalformed)
			}
			p.HasSkip = true
			p.Skip = binary.BigEndian.Uint32(body)
		case ExtForkCredit:
			if p.HasCredit || len(body) != 4 {
				return fmt.Errorf("%w: FORK_CREDIT", ErrMalformed)
			}
			p.HasCredit = true
			p.Credit = binary.BigEndian.Uint32(body)
		case ExtFragment:
			if p.HasFragment || len(body) != 4 {
				return fmt.Errorf("%w: FRAGMENT", ErrMalformed)
			}
			p.HasFragment = true
			p.FragOffset = binary.BigEndian.Uint16(body)
			p.FragTotal = binary.BigEndian.Uint16(body[2:])
			if p.FragTotal == 0 || p.FragOffset >= p.FragTotal {
				return fmt.Errorf("%w: FRAGMENT at %d of %d", ErrMalformed, p.FragOffset, p.FragTotal)
			}
		case ExtPathChallenge, ExtPathResponse:
			if len(body) != 8 {
				return fmt.Errorf("%w: path validation extension", ErrMalformed)
			}
			v := binary.BigEndian.Uint64(body)
			if typ == ExtPathChallenge {
				p.HasChallenge, p.Challenge = true, v
			} else {
				p.HasResponse, p.Response = true, v
			}
		default:
			// Unknown extensions are skipped, so later versions can add
			// headers without breaking older receivers.
		}
	}
	return nil
}

func parseSNACK(b []byte, s *SNACK) error {
	if len(b) < 8 || (len(b)-8)%8 != 0 || (len(b)-8)/8 > MaxGaps {
		return fmt.Errorf("%w: SELECTIVE_NACK length %d", ErrMalformed, len(b))
	}
	s.Latest = binary.BigEndian.Uint32(b)
	s.AckDelay = binary.BigEndian.Uint32(b[4:])
	s.Gaps = s.Gaps[:0]
	for b = b[8:]; len(b) > 0; b = b[8:] {
		g := Gap{binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])}
		if g.Gap == 0 || g.Data == 0 {
			return fmt.Errorf("%w: empty SNACK gap descriptor", ErrMalformed)
		}
		s.Gaps = append(s.Gaps, g)
	}
	return nil
}

// AppendHeader appends the fixed header and the extensions present in p
// to dst, setting the header stack pointer. The payload is appended by the
// caller.
func AppendHeader(dst []byte, p *Packet) []byte {
	start := len(dst)
	w := p.Window
	if w > MaxWindow {
		w = MaxWindow
	}
	dst = append(dst, Version, byte(p.Opcode), 0, 0, p.Flags, byte(w>>16), byte(w>>8), byte(w))
	dst = binary.BigEndian.AppendUint32(dst, p.Seq)
	dst = binary.BigEndian.AppendUint32(dst, p.Expected)
	dst = binary.BigEndian.AppendUint32(dst, p.PN)
	dst = binary.BigEndian.AppendUint32(dst, p.Dst)
	dst = binary.BigEndian.AppendUint32(dst, p.Src)
	if p.HasParam {
		dst = append(dst, ExtConnectParam, 0, 0, connectParamLen)
		dst = binary.BigEndian.AppendUint32(dst, p.Param.Window)
		dst = binary.BigEndian.AppendUint32(dst, p.Param.MaxMessage)
		dst = append(dst, p.Param.Association[:]...)
	}
	if p.EphemeralKey != nil {
		n := 4 + len(p.EphemeralKey)
		dst = append(dst, ExtEphemeralKey, 0, byte(n>>8), byte(n))
		dst = append(dst, p.EphemeralKey...)
	}
	if p.HasSNACK {
		gaps := p.SNACK.Gaps
		if len(gaps) > MaxGaps {
			gaps = gaps[:MaxGaps]
		}
		n := 12 + 8*len(gaps)
		dst = append(dst, ExtSelectiveNACK, 0, byte(n>>8), byte(n))
		dst = binary.BigEndian.AppendUint32(dst, p.SNACK.Latest)
		dst = binary.BigEndian.AppendUint32(dst, p.SNACK.AckDelay)
		for _, g := range gaps {
			dst = binary.BigEndian.AppendUint32(dst, g.Gap)
			dst = binary.BigEndian.AppendUint32(dst, g.Data)
		}
	}
	if p.HasSkip {
		dst = append(dst, ExtSkip, 0, 0, SkipLen)
		dst = binary.BigEndian.AppendUint32(dst, p.Skip)
	}
	if p.HasCredit {
		dst = append(dst, ExtForkCredit, 0, 0, ForkCreditLen)
		dst = binary.BigEndian.AppendUint32(dst, p.Credit)
	}
	if p.HasFragment {
		dst = append(dst, ExtFragment, 0, 0, FragmentLen)
		dst = binary.BigEndian.AppendUint16(dst, p.FragOffset)
		dst = binary.BigEndian.AppendUint16(dst, p.FragTotal)
	}
	if p.HasChallenge {
		dst = append(dst, ExtPathChallenge, 0, 0, 12)
		dst = binary.BigEndian.AppendUint64(dst, p.Challenge)
	}
	if p.HasResponse {
		dst = append(dst, ExtPathResponse, 0, 0, 12)
		dst = binary.BigEndian.AppendUint64(dst, p.Response)
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start))
	return dst
}

// DecodeSeq expands a 32-bit truncated number to the 64-bit value closest
// to expected, as QUIC does for packet numbers.
func DecodeSeq(expected uint64, truncated uint32) uint64 {
	const win = 1 << 32
	const half = win / 2
	cand := expected&^(win-1) | uint64(truncated)
	if cand+half <= expected && cand < (1<<62)-win {
		return cand + win
	}
	if cand > expected+half && cand >= win {
		return cand - win
	}
	return cand
}
