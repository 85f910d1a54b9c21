package fsp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/postsockets/postsockets/post"
)

// TestFlightRoundTrip: a flight split at any room reassembles in any
// order, copies included.
func TestFlightRoundTrip(t *testing.T) {
	body := make([]byte, 6000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	for _, room := range []int{5, 100, 1100, 7000} {
		frags := splitFlight(body, room)
		frags = append(frags, frags[0])
		rand.Shuffle(len(frags), func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
		var r reassembly
		var got []byte
		for _, f := range frags {
			if len(f) > room {
				t.Fatalf("room %d: fragment of %d", room, len(f))
			}
			out, err := r.add(f)
			if err != nil {
				t.Fatal(err)
			}
			if out != nil {
				if got != nil {
					t.Fatal("flight returned twice")
				}
				got = out
			}
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("room %d: flight differs", room)
		}
	}
}

// FuzzReassembly: any sequence of fragments is refused with
// post.ErrMalformed, kept, or completes a flight no larger than
// maxFlightSize whose bytes are those of the fragments.
func FuzzReassembly(f *testing.F) {
	f.Add(bytes.Join(splitFlight([]byte("hello, flight"), 8), nil), uint8(8))
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c'}, uint8(7))
	f.Add([]byte{0, 1, 0, 3, 'b', 'c', 0, 0, 0, 3, 'a'}, uint8(6))
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		n := int(size%32) + 1
		var r reassembly
		done := false
		for len(data) > 0 {
			frag := data[:min(n, len(data))]
			data = data[len(frag):]
			out, err := r.add(frag)
			if err != nil {
				if !errors.Is(err, post.ErrMalformed) {
					t.Fatal(err)
				}
				continue
			}
			if out == nil {
				continue
			}
			if done || len(out) > maxFlightSize || len(out) != int(binary.BigEndian.Uint16(frag[2:])) {
				t.Fatalf("flight of %d bytes (done before: %v)", len(out), done)
			}
			off := int(binary.BigEndian.Uint16(frag))
			if !bytes.Equal(out[off:off+len(frag)-fragHeaderLen], frag[fragHeaderLen:]) {
				t.Fatal("the last chunk is not in the flight")
			}
			done = true
		}
	})
}
