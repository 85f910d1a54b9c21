package fsp

import (
	"sync"

	fcrypto "github.com/postsockets/postsockets/psi/fsp/internal/crypto"
	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

// affirmFlight is what a responder keeps of its ACK_CONNECT_REQ until the
// client confirms: the parts of its own (ephemeral key, parameters,
// signature, confirmation tag) and the listener's certificate chain,
// shared by every pending handshake. The fragments are rebuilt at each
// send, so a pending handshake, whose client proved only its address,
// holds a few hundred bytes whatever the chain's size (as packets, 1.3
// KiB a fragment, one to four fragments).
type affirmFlight struct {
	dst     uint32
	src     uint32
	param   wire.ConnectParam
	pub     [fcrypto.PublicLen]byte
	hello   serverHello // nonce: the Conn's; cred.Chain: the listener's
	confirm [fcrypto.TagLen]byte
	bodyLen int
	n       int // fragments
}

// flightBodies lends scratch space to rebuild a flight.
var flightBodies = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (f *affirmFlight) header() wire.Packet {
	return wire.Packet{
		Header:       wire.Header{Opcode: wire.AckConnectReq, Dst: f.dst, Src: f.src},
		HasParam:     true,
		Param:        f.param,
		EphemeralKey: f.pub[:],
	}
}

// newAffirmFlight checks that the hello encodes and counts its fragments.
func newAffirmFlight(f *affirmFlight) (*affirmFlight, error) {
	f.hello.confirm = f.confirm[:]
	bp := flightBodies.Get().(*[]byte)
	defer flightBodies.Put(bp)
	body, err := f.hello.append((*bp)[:0])
	if err != nil {
		return nil, err
	}
	*bp = body[:0]
	f.bodyLen = len(body)
	f.n = len(splitFlight(body, f.room()))
	return f, nil
}

func (f *affirmFlight) room() int {
	p := f.header()
	return BaseDatagramSize - len(wire.AppendHeader(nil, &p)) - fcrypto.TagLen
}

// size returns the length of fragment i's packet.
func (f *affirmFlight) size(i int) int {
	room := f.room()
	chunk := room - fragHeaderLen
	return BaseDatagramSize - room + fragHeaderLen + min(chunk, f.bodyLen-i*chunk)
}

// packets rebuilds fragments from, from+1, ... to-1, tagged with key.
func (f *affirmFlight) packets(key []byte, from, to int) [][]byte {
	bp := flightBodies.Get().(*[]byte)
	defer flightBodies.Put(bp)
	body, _ := f.hello.append((*bp)[:0]) // encoded once already
	*bp = body[:0]
	p := f.header()
	var out [][]byte
	for i, frag := range splitFlight(body, f.room()) {
		if i >= from && i < to {
			out = append(out, handshakePacket(make([]byte, 0, f.size(i)), key, &p, frag))
		}
	}
	return out
}
