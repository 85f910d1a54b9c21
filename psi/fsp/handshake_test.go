package fsp

import (
	"bytes"
	"testing"

	"github.com/postsockets/postsockets/psi/fsp/internal/wire"
)

func FuzzParseServerHello(f *testing.F) {
	h := serverHello{nonce: make([]byte, 32), flags: helloClientCert,
		cred: wire.Credential{Chain: [][]byte{[]byte("cert")}, Sig: []byte("sig")}, confirm: make([]byte, 16)}
	b, _ := h.append(nil)
	f.Add(b)
	f.Add([]byte{})
	f.Add(make([]byte, 33))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseServerHello(b)
		if err != nil {
			return
		}
		enc, err := h.append(nil)
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatal("parse and append disagree")
		}
	})
}
