package fsp

import (
	"encoding/binary"

	"github.com/postsockets/postsockets/post"
)

// A handshake flight (the server's hello in ACK_CONNECT_REQ, the client's
// CLIENT_AUTH) may be longer than one packet of BaseDatagramSize, so it
// travels in fragments and never relies on IP fragmentation. Each
// fragment's payload is
//
//	2  offset of the chunk in the flight
//	2  total length of the flight
//	n  chunk
const fragHeaderLen = 4

// splitFlight cuts body into fragment payloads of at most room bytes.
func splitFlight(body []byte, room int) [][]byte {
	chunk := room - fragHeaderLen
	var out [][]byte
	for off := 0; off < len(body) || off == 0; off += chunk {
		end := min(off+chunk, len(body))
		f := make([]byte, 0, fragHeaderLen+end-off)
		f = binary.BigEndian.AppendUint16(f, uint16(off))
		f = binary.BigEndian.AppendUint16(f, uint16(len(body)))
		out = append(out, append(f, body[off:end]...))
		if end == len(body) {
			break
		}
	}
	return out
}

// reassembly collects the fragments of one flight of at most
// maxFlightSize bytes.
type reassembly struct {
	total int
	buf   []byte
	parts [][2]int // [start, end) of each chunk received
	got   int
	done  bool
}

// add takes one fragment payload. It returns the whole flight once every
// byte arrived (once only), nil while some are missing, and an error
// wrapping post.ErrMalformed for a fragment that cannot belong to it.
// A repeated fragment is ignored.
func (r *reassembly) add(frag []byte) ([]byte, error) {
	if len(frag) < fragHeaderLen {
		return nil, post.Errorf(post.ErrMalformed, "fsp: handshake fragment of %d bytes", len(frag))
	}
	off := int(binary.BigEndian.Uint16(frag))
	total := int(binary.BigEndian.Uint16(frag[2:]))
	chunk := frag[fragHeaderLen:]
	end := off + len(chunk)
	switch {
	case total == 0 || total > maxFlightSize:
		return nil, post.Errorf(post.ErrMalformed, "fsp: handshake flight of %d bytes", total)
	case r.total != 0 && total != r.total:
		return nil, post.Errorf(post.ErrMalformed, "fsp: handshake fragments disagree on the flight's length")
	case len(chunk) == 0 || end > total:
		return nil, post.Errorf(post.ErrMalformed, "fsp: handshake fragment [%d, %d) outside a flight of %d bytes", off, end, total)
	}
	if r.done {
		return nil, nil
	}
	for _, p := range r.parts {
		if p[0] == off && p[1] == end {
			return nil, nil // a copy
		}
		if off < p[1] && p[0] < end {
			return nil, post.Errorf(post.ErrMalformed, "fsp: overlapping handshake fragments")
		}
	}
	if r.buf == nil {
		r.total, r.buf = total, make([]byte, total)
	}
	copy(r.buf[off:], chunk)
	r.parts = append(r.parts, [2]int{off, end})
	r.got += len(chunk)
	if r.got < r.total {
		return nil, nil
	}
	// Done: the flight is the caller's now.
	buf := r.buf
	r.done, r.buf, r.parts = true, nil, nil
	return buf, nil
}
