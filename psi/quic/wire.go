package quic

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

// Stream header, written once at the start of every bidirectional stream so
// the peer learns what the stream is as soon as it arrives:
//
//	root: version(1) kindRoot(1) association(16)
//	fork: version(1) kindFork(1) class(1) parent stream ID(8, big-endian)
//
// Datagrams carry a uvarint stream ID naming the transient, then the whole
// message.
const (
	headerVersion = 1

	kindRoot = 1
	kindFork = 2

	rootHeaderLen = 2 + 16
	forkHeaderLen = 2 + 1 + 8
)

// header is a decoded stream header.
type header struct {
	kind        byte
	association [16]byte
	class       psi.TrafficClass
	parent      uint64
}

// appendHeader appends the wire form of h to b.
func appendHeader(b []byte, h header) []byte {
	b = append(b, headerVersion, h.kind)
	switch h.kind {
	case kindRoot:
		b = append(b, h.association[:]...)
	case kindFork:
		b = append(b, byte(h.class))
		b = binary.BigEndian.AppendUint64(b, h.parent)
	}
	return b
}

// readHeader reads and validates one stream header from r.
func readHeader(r io.Reader) (header, error) {
	var buf [rootHeaderLen]byte
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return header{}, headerErr(err)
	}
	if buf[0] != headerVersion {
		return header{}, fmt.Errorf("%w: stream header version %d", post.ErrMalformed, buf[0])
	}
	h := header{kind: buf[1]}
	switch h.kind {
	case kindRoot:
		if _, err := io.ReadFull(r, buf[2:rootHeaderLen]); err != nil {
			return header{}, headerErr(err)
		}
		copy(h.association[:], buf[2:rootHeaderLen])
	case kindFork:
		if _, err := io.ReadFull(r, buf[2:forkHeaderLen]); err != nil {
			return header{}, headerErr(err)
		}
		if buf[2] > byte(psi.Milk) {
			return header{}, fmt.Errorf("%w: traffic class %d", post.ErrMalformed, buf[2])
		}
		h.class = psi.TrafficClass(buf[2])
		h.parent = binary.BigEndian.Uint64(buf[3:forkHeaderLen])
	default:
		return header{}, fmt.Errorf("%w: stream kind %d", post.ErrMalformed, h.kind)
	}
	return h, nil
}

func headerErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: truncated stream header", post.ErrMalformed)
	}
	return err
}

// appendDatagramTag appends the tag naming stream id to b.
func appendDatagramTag(b []byte, id uint64) []byte { return binary.AppendUvarint(b, id) }

// parseDatagram splits a received datagram into the stream ID it names and
// the message it carries.
func parseDatagram(b []byte) (id uint64, msg []byte, err error) {
	id, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: bad datagram tag", post.ErrMalformed)
	}
	return id, b[n:], nil
}
