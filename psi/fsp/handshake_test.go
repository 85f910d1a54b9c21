package fsp

import (
	"bytes"
	"testing"
)

func FuzzParseServerHello(f *testing.F) {
	h := serverHello{nonce: make([]byte, 32), chain: [][]byte{[]byte("cert")}, sig: []byte("sig"), confirm: make([]byte, 16)}
	f.Add(h.append(nil))
	f.Add([]byte{})
	f.Add(make([]byte, 33))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseServerHello(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.append(nil), b) {
			t.Fatal("parse and append disagree")
		}
	})
}
