package fsp

import "testing"

// TestPutBufNil: an entry without a buffer (an abort marker) freed into
// the pool must not come back out of getBuf as a nil buffer.
func TestPutBufNil(t *testing.T) {
	for range 100 {
		putBuf(nil)
	}
	for range 100 {
		if b := getBuf(); b == nil {
			t.Fatal("getBuf returned a nil buffer put back by putBuf(nil)")
		}
	}
}
