package crypto

import (
	"bytes"
	"crypto/ecdh"
	"testing"

	"golang.org/x/crypto/curve25519"
)

// TestKeyPairMatchesLadder: the public key is the one the Montgomery
// ladder computes from the private key, and both ends agree.
func TestKeyPairMatchesLadder(t *testing.T) {
	for range 500 {
		a, err := NewKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		want, err := curve25519.X25519(a.Private[:], curve25519.Basepoint)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Public[:], want) {
			t.Fatalf("public key %x, ladder %x", a.Public, want)
		}
		k, err := ecdh.X25519().NewPrivateKey(a.Private[:])
		if err != nil || !bytes.Equal(k.PublicKey().Bytes(), a.Public[:]) {
			t.Fatalf("crypto/ecdh disagrees: %v", err)
		}
		b, _ := NewKeyPair()
		s1, err1 := a.Shared(b.Public[:])
		s2, err2 := b.Shared(a.Public[:])
		if err1 != nil || err2 != nil || !bytes.Equal(s1, s2) {
			t.Fatalf("shared secrets differ: %v %v", err1, err2)
		}
	}
}

func BenchmarkNewKeyPair(b *testing.B) {
	b.Run("edwards", func(b *testing.B) {
		for range b.N {
			NewKeyPair()
		}
	})
	b.Run("ladder", func(b *testing.B) {
		var k [32]byte
		for range b.N {
			curve25519.X25519(k[:], curve25519.Basepoint)
		}
	})
}
