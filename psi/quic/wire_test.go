package quic

import (
	"bytes"
	"errors"
	"testing"

	quicgo "github.com/quic-go/quic-go"

	"github.com/postsockets/postsockets/post"
	"github.com/postsockets/postsockets/psi"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []header{
		{kind: kindRoot, association: [16]byte{1, 2, 3, 15: 16}},
		{kind: kindFork, class: psi.Milk, parent: 1<<62 - 1},
		{kind: kindFork, class: psi.Wine, parent: 4},
	} {
		b := appendHeader(nil, h)
		got, err := readHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("readHeader(%x): %v", b, err)
		}
		if got != h {
			t.Errorf("readHeader(%x) = %+v, want %+v", b, got, h)
		}
	}
}

func TestHeaderMalformed(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{headerVersion},
		{2, kindRoot},
		{headerVersion, 9},
		{headerVersion, kindRoot, 1, 2},
		{headerVersion, kindFork, 0, 0, 0},
		{headerVersion, kindFork, 2, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		if _, err := readHeader(bytes.NewReader(b)); !errors.Is(err, post.ErrMalformed) {
			t.Errorf("readHeader(%x) = %v, want ErrMalformed", b, err)
		}
	}
}

func TestDatagramTag(t *testing.T) {
	for _, id := range []uint64{0, 4, 127, 128, 1<<62 - 1} {
		b := appendDatagramTag(nil, id)
		b = append(b, "msg"...)
		gid, msg, err := parseDatagram(b)
		if err != nil || gid != id || string(msg) != "msg" {
			t.Errorf("parseDatagram(%x) = %d, %q, %v", b, gid, msg, err)
		}
	}
	if _, _, err := parseDatagram([]byte{0x80}); !errors.Is(err, post.ErrMalformed) {
		t.Errorf("truncated tag: %v", err)
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add(appendHeader(nil, header{kind: kindRoot, association: [16]byte{7}}))
	f.Add(appendHeader(nil, header{kind: kindFork, class: psi.Milk, parent: 8}))
	f.Add([]byte{})
	f.Add([]byte{headerVersion, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readHeader(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// A valid header re-encodes to the bytes it was read from.
		enc := appendHeader(nil, h)
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("re-encoded %x, read from %x", enc, b)
		}
	})
}

func FuzzParseDatagram(f *testing.F) {
	f.Add(appendDatagramTag(nil, 0))
	f.Add(append(appendDatagramTag(nil, 1<<40), "payload"...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, msg, err := parseDatagram(b)
		if err != nil {
			if !errors.Is(err, post.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		tag := appendDatagramTag(nil, id)
		if len(tag)+len(msg) > len(b) || !bytes.Equal(msg, b[len(b)-len(msg):]) {
			t.Fatalf("parse(%x) = %d, %x", b, id, msg)
		}
	})
}

func TestErrorTextOnce(t *testing.T) {
	err := mapError(&quicgo.IdleTimeoutError{})
	if !errors.Is(err, post.ErrTimeout) {
		t.Fatalf("%v does not wrap ErrTimeout", err)
	}
	var idle *quicgo.IdleTimeoutError
	if !errors.As(err, &idle) {
		t.Fatalf("%v does not keep quic-go's error", err)
	}
	if got, want := err.Error(), "post: timeout: no recent network activity"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
