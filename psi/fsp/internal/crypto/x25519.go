package crypto

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"math/big"
)

// fieldP is the prime of Curve25519's field, 2^255 - 19.
var fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

// newX25519 makes an X25519 key pair with a fixed-base multiplication on
// the birationally equivalent Edwards curve, about twice as fast as the
// Montgomery ladder X25519(k, Basepoint) runs. Ed25519 key generation
// from a seed multiplies the base point by the clamped scalar
// SHA-512(seed)[:32] in constant time; X25519 clamps its scalar the same
// way, so that scalar is the private key, and the public key is the
// Montgomery u = (1 + y) / (1 - y) of the Edwards point's y. Only public
// data goes through math/big.
func newX25519() (*KeyPair, error) {
	var seed [ed25519.SeedSize]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, err
	}
	k := new(KeyPair)
	h := sha512.Sum512(seed[:])
	copy(k.Private[:], h[:32])
	edPub := ed25519.NewKeyFromSeed(seed[:])[32:]
	var be [32]byte // y, big-endian, without the sign bit of x
	for i := range be {
		be[i] = edPub[31-i]
	}
	be[0] &= 0x7f
	y := new(big.Int).SetBytes(be[:])
	den := new(big.Int).Sub(big.NewInt(1), y)
	den.Mod(den, fieldP)
	if den.ModInverse(den, fieldP) == nil {
		return nil, errNoInverse // y = 1: the identity, never a clamped scalar's point
	}
	u := y.Add(y, big.NewInt(1))
	u.Mul(u, den).Mod(u, fieldP)
	u.FillBytes(be[:])
	for i := range be {
		k.Public[i] = be[31-i]
	}
	return k, nil
}
